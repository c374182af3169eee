"""Leaves of :class:`forge_ci.errors.StoreError` raised by object stores.

::

    StoreError                      any other store failure (message names store and key)
    ├── ObjectNotFoundError         get/size of a key that does not exist
    ├── BucketNotFoundError         the S3 bucket (or file:// root) does not exist
    ├── StoreAccessError            credentials missing, wrong or not allowed
    └── StoreUnreachableError       endpoint unreachable, connection dropped, timeouts

Messages name the store URL (never with credentials), the key and the operation.
"""

from __future__ import annotations

from forge_ci.errors import StoreError


class ObjectNotFoundError(StoreError):
    def __init__(self, store: str, key: str) -> None:
        super().__init__(
            f"{store}: object {key!r} does not exist",
            hint="the snapshot may reference a pruned object; run `forge-ci verify`",
        )
        self.key = key


class BucketNotFoundError(StoreError):
    pass


class StoreAccessError(StoreError):
    pass


class StoreUnreachableError(StoreError):
    pass


__all__ = [
    "BucketNotFoundError",
    "ObjectNotFoundError",
    "StoreAccessError",
    "StoreError",
    "StoreUnreachableError",
]
