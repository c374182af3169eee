"""``memory://`` - an in-process store for unit tests; same contract as the others."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from forge_ci.store.base import ObjectStore, check_key, check_prefix
from forge_ci.store.errors import ObjectNotFoundError

_READ_SIZE = 256 * 1024


class MemoryStore(ObjectStore):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        check_key(key)
        data = b"".join(chunks)  # fully read before publishing: atomic by construction
        with self._lock:
            self._objects[key] = data
        return len(data)

    def get(self, key: str) -> Iterator[bytes]:
        data = self._lookup(key)
        return (data[i : i + _READ_SIZE] for i in range(0, len(data), _READ_SIZE))

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._objects

    def size(self, key: str) -> int:
        return len(self._lookup(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        with self._lock:
            keys = [k for k in self._objects if k.startswith(prefix)]
        return iter(keys)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def _lookup(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise ObjectNotFoundError(self.url, key)
        return data
