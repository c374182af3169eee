"""Object stores: where backup objects live. See :mod:`forge_ci.store.base` for the
contract every store keeps, and :func:`open_store` to get one from a URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from forge_ci.store.base import ObjectStore
from forge_ci.store.errors import (
    BucketNotFoundError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreUnreachableError,
)

__all__ = [
    "BucketNotFoundError",
    "ObjectNotFoundError",
    "ObjectStore",
    "StoreAccessError",
    "StoreError",
    "StoreUnreachableError",
    "open_store",
]


def open_store(url: str, **opts: Any) -> ObjectStore:
    """The store for ``url``: ``s3://bucket[/prefix]``, ``file:///abs/path`` or
    ``memory://`` (tests). ``opts`` go to the store's constructor (for S3: endpoint_url,
    region, credentials, part_size, retention_mode/_days, max_attempts, timeouts).
    Creating a store does no I/O; call ``check()`` to fail early."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.hostname or parts.username or parts.password or parts.port:
            raise ValueError(
                "s3 store URLs look like s3://bucket/prefix (credentials come from the environment)"
            )
        from forge_ci.store.s3 import S3Store  # boto3 is slow to import: only when used

        return S3Store(parts.netloc, unquote(parts.path), **opts)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError("file store URLs look like file:///absolute/path")
        from forge_ci.store.file import FileStore

        return FileStore(unquote(parts.path), **opts)
    if parts.scheme == "memory":
        from forge_ci.store.memory import MemoryStore

        return MemoryStore(url, **opts)
    from forge_ci.plugins import find  # an installed forge_ci.stores plugin for the scheme

    plugin = find("forge_ci.stores", parts.scheme) if parts.scheme else None
    if plugin is not None:
        store: ObjectStore = plugin.open(url, **opts) if hasattr(plugin, "open") \
            else plugin(url, **opts)
        return store
    raise ValueError(f"unsupported store URL scheme {parts.scheme!r}: use s3:// or file:// "
                     "(or install a plugin for it: forge-ci plugins lists them)")
