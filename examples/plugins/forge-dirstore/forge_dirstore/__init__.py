"""A ``dir://`` object store for forge-ci: each object a file under one folder.

forge-ci finds it through the ``forge_ci.stores`` entry point named ``dir`` and
calls :func:`open` with the store URL. It keeps the contract of
``forge_ci.store.base.ObjectStore``: atomic puts (temp file, fsync, rename),
``ObjectNotFoundError`` before a get of a missing key returns, idempotent
deletes, and leftovers of interrupted puts (``.part-*`` files) invisible and
removed by ``cleanup``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from forge_ci.store import ObjectNotFoundError, ObjectStore, StoreError
from forge_ci.store.base import check_key

FORGE_PLUGIN_API = 1  # the plugin API this package was written for
CHUNK = 1 << 20
_PART = ".part-"


def open(url: str, **_opts: Any) -> DirStore:
    """The store for ``dir:///absolute/folder`` (the folder is made on first put)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError("dir store URLs look like dir:///absolute/folder")
    return DirStore(Path(unquote(parts.path)), url)


class DirStore(ObjectStore):
    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.url = url or f"dir://{root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{_PART}{uuid.uuid4().hex}-{final.name}")
        size = 0
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    def get(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(self.url, key) from None
        return _stream(handle, self.url, key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(self.url, key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(_PART):
                    continue
                key = Path(folder, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def cleanup(self, older_than: float = 24 * 3600.0) -> int:
        removed = 0
        limit = time.time() - older_than
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = Path(folder, name)
                if name.startswith(_PART) and path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


def _stream(handle: Any, url: str, key: str) -> Iterator[bytes]:
    with contextlib.closing(handle):
        try:
            while chunk := handle.read(CHUNK):
                yield chunk
        except OSError as e:
            raise StoreError(f"{url}: reading {key} failed: {e.strerror}") from None
