"""The object store seam: a flat key -> bytes namespace, written whole or not at all.

Every implementation (memory, file://, s3://) passes the one contract suite in
``tests/store/test_contract.py``; the backup engine relies on nothing else.

Keys are ``/``-separated paths of segments matching ``[A-Za-z0-9_-][A-Za-z0-9._-]*``
(no empty, ``.`` or ``..`` segments, no leading dot: dot-names are reserved for a
store's own temporary files), at most 512 characters. A bad key is a bug in the
caller and raises ``ValueError``.

Failures raise :class:`forge_ci.errors.StoreError` leaves (see
:mod:`forge_ci.store.errors`); an exception raised by the caller's own iterable
during ``put`` (including ``KeyboardInterrupt``) propagates unchanged.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_PREFIX_RE = re.compile(rf"(?:{_SEGMENT}/)*[A-Za-z0-9._-]*")
MAX_KEY_LENGTH = 512


def check_key(key: str) -> str:
    """Return ``key`` if valid, else raise ValueError."""
    if len(key) > MAX_KEY_LENGTH or not _KEY_RE.fullmatch(key):
        raise ValueError(f"invalid object key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: any leading part of a valid key (``""`` lists everything)."""
    if len(prefix) > MAX_KEY_LENGTH or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid listing prefix {prefix!r}")
    return prefix


class ObjectStore(abc.ABC):
    """Contract of every store. Methods are safe to call from several threads.

    ``url`` identifies the store in messages; it never carries credentials.
    """

    url: str

    @abc.abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of ``chunks`` under ``key``; return its size.

        Atomic: readers see either the previous state (no object, or the old object
        when overwriting) or the whole new object - never a prefix - even if the
        process dies mid-put. The stream may be of any, unknown, length and is read
        once, with memory bounded by the store's buffer (one multipart part for S3).

        Interrupted puts: if ``chunks`` raises (any exception, KeyboardInterrupt too)
        or the store fails, the put is abandoned before the exception propagates:
        nothing becomes visible and temporary data (temp file, multipart upload) is
        removed. Leftovers of a killed process are invisible to get/list/exists and
        are removed by :meth:`cleanup`.

        Idempotent: putting the same bytes again is harmless; different bytes replace
        the object (last writer wins).
        """

    def put_sealed(self, key: str, pieces: Sequence[bytes], sha256: str) -> int:
        """:meth:`put` of an object the caller holds whole, with the hex SHA-256 of its
        bytes: a store that binds a body to its request by that digest uses it instead
        of hashing the body again. A wrong digest fails the put; it never stores
        other bytes."""
        return self.put(key, pieces)

    @abc.abstractmethod
    def get(self, key: str) -> Iterator[bytes]:
        """Stream the object's bytes in chunks of bounded size.

        Raises :class:`ObjectNotFoundError` *before returning* if ``key`` does not
        exist. A failure mid-stream raises :class:`StoreError` from the iterator; it
        never yields bytes of another version. Close the iterator when abandoning it
        early (``contextlib.closing``) to release the connection or file.
        """

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True if a complete object is stored under ``key``."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; :class:`ObjectNotFoundError` if missing."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (plain string prefix, as in S3),
        each exactly once, in no particular order. Objects being written are not
        listed; an object put or deleted during the listing may or may not appear."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``. Idempotent: deleting a missing key succeeds silently."""

    def cleanup(self, older_than: float = 24 * 3600.0) -> int:
        """Remove leftovers of puts interrupted more than ``older_than`` seconds ago
        (a killed process cannot clean up after itself). Returns how many were
        removed. Never touches complete objects."""
        return 0

    def check(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Fail early with a clear StoreError leaf if the store cannot be used
        (missing bucket, unreachable endpoint, refused credentials). Changes nothing."""

    def read_bytes(self, key: str) -> bytes:
        """Whole-object convenience for small objects (manifests, indexes)."""
        return b"".join(self.get(key))

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
