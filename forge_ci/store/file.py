"""``file:///path`` - objects as files under a root directory (the embedded default).

Atomic put the way restic's local backend does it: write a temporary file in the
object's own directory (same filesystem, so rename is atomic), fsync it, rename it
over the final name, then fsync the directory so the rename itself survives a crash.
Temporary files are named ``.tmp-*.part``; dot-names are never keys, so listings
never show them, and :meth:`FileStore.cleanup` removes those left by killed
processes. Directories created for a key are fsynced into their parent too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from forge_ci.store.base import ObjectStore, check_key, check_prefix
from forge_ci.store.errors import ObjectNotFoundError, StoreAccessError, StoreError

_READ_SIZE = 256 * 1024
_TMP_PREFIX, _TMP_SUFFIX = ".tmp-", ".part"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], *, read_size: int = _READ_SIZE) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()
        self._read_size = read_size

    # --- contract -------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self.root / check_key(key)
        with self._translate("write", key):
            self._makedirs(path.parent)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                size = self._write_all(out, chunks, key)
            with self._translate("write", key):
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._translate("write", key):
            _fsync_dir(path.parent)
        return size

    def get(self, key: str) -> Iterator[bytes]:
        path = self.root / check_key(key)
        try:
            handle = path.open("rb")  # opened now: a later replace can't mix versions
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(self.url, key) from None
        except OSError as exc:
            raise self._error("read", key, exc) from exc
        return self._read_all(handle, key)

    def exists(self, key: str) -> bool:
        return (self.root / check_key(key)).is_file()

    def size(self, key: str) -> int:
        path = self.root / check_key(key)
        try:
            if path.is_file():
                return path.stat().st_size
        except OSError as exc:
            raise self._error("stat", key, exc) from exc
        raise ObjectNotFoundError(self.url, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._walk(self.root, "", check_prefix(prefix))

    def delete(self, key: str) -> None:
        path = self.root / check_key(key)
        with self._translate("delete", key):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            _fsync_dir(path.parent)

    def check(self) -> None:
        existing = self.root
        while not existing.exists():
            existing = existing.parent  # the root is created by the first put
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise StoreAccessError(
                f"{self.url}: {existing} is not a writable directory",
                hint="fix `backup.store` or the directory's permissions",
            )

    def cleanup(self, older_than: float = 24 * 3600.0) -> int:
        cutoff, removed = time.time() - older_than, 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                    tmp = Path(dirpath, name)
                    try:
                        if tmp.stat().st_mtime < cutoff:
                            tmp.unlink()
                            removed += 1
                    except FileNotFoundError:
                        continue  # finished or cleaned by someone else meanwhile
        return removed

    # --- helpers --------------------------------------------------------------------

    def _write_all(self, out: BinaryIO, chunks: Iterable[bytes], key: str) -> int:
        size = 0
        for chunk in chunks:  # errors of the caller's iterable propagate unchanged
            with self._translate("write", key):
                out.write(chunk)
            size += len(chunk)
        with self._translate("write", key):
            out.flush()
            os.fsync(out.fileno())
        return size

    def _read_all(self, handle: BinaryIO, key: str) -> Iterator[bytes]:
        with handle:
            while True:
                with self._translate("read", key):
                    chunk = handle.read(self._read_size)
                if not chunk:
                    return
                yield chunk

    def _makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue  # a concurrent put created it
            _fsync_dir(new.parent)  # make the new entry durable

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temp files and anything else that is not a key
            key = rel + entry.name
            if entry.is_dir(follow_symlinks=False):
                sub = key + "/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    yield from self._walk(Path(entry.path), sub, prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                yield key

    @contextlib.contextmanager
    def _translate(self, op: str, key: str) -> Iterator[None]:
        """Turn OSError into the store's error leaves."""
        try:
            yield
        except OSError as exc:
            raise self._error(op, key, exc) from exc

    def _error(self, op: str, key: str, exc: OSError) -> StoreError:
        what = f"{self.url}: cannot {op} {key!r}: {exc.strerror or exc}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreAccessError(what, hint="check the permissions of the backup directory")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreError(what, hint="free space on the backup disk or prune old snapshots")
        return StoreError(what)
