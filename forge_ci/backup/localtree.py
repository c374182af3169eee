"""A restored tree written straight into a new directory of this machine (the local target).

Over SSH the files travel as a tar stream into ``tar --extract`` on the host
(:func:`forge_ci.backup.tarstream.write_tree`). On the local target there is no wire:
a tar process would only copy every byte once more through a pipe. :func:`write_new_tree`
makes the same tree with system calls, with the result ``tar --extract
--preserve-permissions --no-same-owner --delay-directory-restore`` gives:

* each entry's permission bits exactly (no umask), owned by the current user;
* nanosecond mtimes on files, symlinks and directories; a directory's mode and
  mtime are set last, deepest first, so writing its children does not change them;
* missing parent directories made with the default mode, as tar makes them.

Files of ``DIRECT_MIN`` bytes and more are written past the page cache (O_DIRECT)
where the file system takes it: the same bytes, without filling memory with data
nothing reads back.

Contract: ``dest`` is new or empty (a restore's staging directory) and ``entries``
come from a parsed manifest (:func:`forge_ci.backup.snapshot.parse`: relative,
normalised paths, nothing below a symlink), directories before their contents and
symlinks last. Even so, files are created with ``O_EXCL | O_NOFOLLOW`` and a path
that is absolute or has ``..`` is refused: nothing is ever written outside ``dest``.
Content shorter or longer than the entry's size is an error; the content iterator
is always run to its end, so checks that fire there (a SHA-256) do run.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from forge_ci.backup.snapshot import FileEntry
from forge_ci.errors import BackupError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def write_new_tree(dest: str, entries: Iterable[FileEntry],
                   content: Callable[[FileEntry], Iterable[bytes | memoryview]]) -> None:
    """Create ``dest`` and the tree of ``entries`` in it (see the module docstring).

    An exception from ``content`` propagates as it is; a failed system call or a
    size mismatch is a :class:`BackupError`. The caller removes ``dest`` either way.
    """
    NewTree(dest).write_all(entries, content)


class NewTree:
    """:func:`write_new_tree` one entry at a time: directories first, then files
    (:meth:`write_file` may be called from several threads at once, for different
    files), symlinks, and :meth:`finish` once, last."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self._dirs: list[FileEntry] = []
        self._made = {dest}  # directories known to exist: one mkdir each, not one per file
        self._stages = _Stages()
        with _errors(dest):
            os.makedirs(dest, exist_ok=True)

    def write_all(self, entries: Iterable[FileEntry],
                  content: Callable[[FileEntry], Iterable[bytes | memoryview]], *,
                  written: Callable[[FileEntry], bool] | None = None) -> None:
        """Every entry in order, then :meth:`finish`. A file for which ``written`` is
        true is written by another thread (:meth:`write_file`): its ``content`` is only
        run to its end, which waits for that writer and raises what it raised."""
        for entry in entries:
            if entry.type == "dir":
                self.add_dir(entry)
            elif entry.type == "symlink":
                self.add_link(entry)
            elif written is not None and written(entry):
                for _ in content(entry):
                    pass
            else:
                self.write_file(entry, content(entry))
        self.finish()

    def add_dir(self, entry: FileEntry) -> None:
        path = _inside(self.dest, entry.path)
        with _errors(self.dest):
            os.makedirs(path, mode=0o700, exist_ok=True)
        self._made.add(path)
        self._dirs.append(entry)

    def add_link(self, entry: FileEntry) -> None:
        path = self._parent_made(entry)
        with _errors(self.dest):
            os.symlink(entry.target or "", path)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> None:
        path = self._parent_made(entry)
        with _errors(self.dest):
            _write_file(path, entry, chunks, self._stages)

    def finish(self) -> None:
        """Directories' modes and mtimes, deepest first."""
        with _errors(self.dest):
            for entry in sorted(self._dirs, key=lambda d: d.path.count("/"), reverse=True):
                path = _inside(self.dest, entry.path)
                os.chmod(path, entry.mode & 0o777)
                os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))

    def _parent_made(self, entry: FileEntry) -> str:
        path = _inside(self.dest, entry.path)
        parent = os.path.dirname(path)
        if parent not in self._made:
            with _errors(self.dest):
                os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        return path


@contextmanager
def _errors(dest: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise BackupError(f"writing files into {dest} failed: {e}") from None


def _inside(dest: str, path: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise BackupError(f"refusing to write {path!r}: not a relative path inside {dest}")
    return os.path.join(dest, path)


def _write_file(path: str, entry: FileEntry, chunks: Iterable[bytes | memoryview],
                stages: _Stages) -> None:
    fd = os.open(path, _FLAGS, 0o600)
    try:
        # Each chunk is written before the next is asked for: restore reuses the
        # buffer a run of chunks were views of once it asked past them.
        if entry.size >= DIRECT_MIN and _direct_on(fd):
            done = _DirectWriter(fd).write_all(entry, chunks, stages)
        else:
            done = 0
            for chunk in chunks:
                done += len(chunk)
                _check_length(entry, done)
                _write_out(fd, memoryview(chunk))
        if done != entry.size:
            raise BackupError(f"the content of {entry.path!r} ended after {done} bytes, "
                              f"{entry.size} recorded")
        os.fchmod(fd, entry.mode & 0o777)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        os.close(fd)


def _check_length(entry: FileEntry, done: int) -> None:
    if done > entry.size:
        raise BackupError(f"the content of {entry.path!r} is longer than its recorded size")


def _write_out(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


# Files from this size on are written past the page cache (O_DIRECT), where the
# file system allows it. A restore does not read them back, and filling the page
# cache is most of a large restore's CPU on a VM (each page is a fresh one for the
# guest: 1.5-2.8 s of system time per GiB here, against 0.3 s written direct); it
# would also push the server's own working set out of memory.
DIRECT_MIN = 8 * 1024 * 1024
_ALIGN = 4096  # offsets, sizes and addresses of direct writes: any block size divides it
_STAGE = 4 * 1024 * 1024  # bytes gathered (aligned) per direct write
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _direct_on(fd: int) -> bool:
    """Turn O_DIRECT on for ``fd``; False where the system or file system has none."""
    if not _O_DIRECT:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
    except OSError:
        return False
    return True


def _direct_off(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)


class _Stages:
    """The aligned buffers of a tree's direct writes: one kept for the next file."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, _STAGE)

    def give(self, stage: mmap.mmap) -> None:
        with self._lock:
            if not self._free:
                self._free.append(stage)


class _DirectWriter:
    """A file's content written with O_DIRECT: its pieces (at any address, of any
    size) are gathered into an aligned buffer, written out whole each time it fills;
    the last partial block goes through the page cache. A file system that refuses
    a direct write (EINVAL: alignment it does not take) gets the rest buffered."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._direct = True

    def write_all(self, entry: FileEntry, chunks: Iterable[bytes | memoryview],
                  stages: _Stages) -> int:
        stage = stages.take()
        try:
            with memoryview(stage) as buf:
                done = fill = 0
                for chunk in chunks:
                    done += len(chunk)
                    _check_length(entry, done)
                    with memoryview(chunk) as whole, whole.cast("B") as view:
                        at = 0
                        while at < len(view):
                            take = min(len(view) - at, _STAGE - fill)
                            buf[fill:fill + take] = view[at:at + take]
                            fill, at = fill + take, at + take
                            if fill == _STAGE:
                                self._out(buf)
                                fill = 0
                whole_blocks = fill - fill % _ALIGN
                self._out(buf[:whole_blocks])
                if self._direct:
                    _direct_off(self._fd)
                _write_out(self._fd, buf[whole_blocks:fill])
                return done
        finally:
            stages.give(stage)

    def _out(self, view: memoryview) -> None:
        """Write ``view`` (whole blocks, aligned) at the file's end."""
        while view and self._direct:
            try:
                written = os.write(self._fd, view)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                written = 0
            view = view[written:]
            if view and (not written or written % _ALIGN):
                # Refused, or cut short off a block: the rest goes buffered.
                _direct_off(self._fd)
                self._direct = False
        _write_out(self._fd, view)
