"""tar as the wire format between runner and host, in both directions, streamed.

Out of the host (backup): GNU ``tar --create`` of an explicit file list on the host,
read on the runner with :mod:`tarfile` in stream mode, one member at a time - never
a file or the archive in memory, nothing on the runner's disk. tar is only framing
here: metadata comes from the listing (:mod:`forge_ci.backup.scan`), and content is
checked against the hash computed on the host.

Into the host (restore, sync): a PAX stream (nanosecond mtimes, any file name;
headers from :mod:`tarfile`, content written through as it comes) straight into
``tar --extract`` on the host. A restore to the local target needs no wire and
writes the files itself (:mod:`forge_ci.backup.localtree`).
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Protocol

from forge_ci._malloc import READ_SIZE
from forge_ci.backup.scan import encode
from forge_ci.errors import BackupError, RemoteCommandError
from forge_ci.remote import Host, Process, sh

CREATE = ("tar --create --file=- --format=gnu --no-recursion --hard-dereference "
          "--null --verbatim-files-from --files-from=-")
EXTRACT = ("tar --extract --file=- --preserve-permissions --no-same-owner "
           "--blocking-factor=256 --read-full-records "  # 128 KiB reads from the pipe
           "--delay-directory-restore")


class ProcessReader(io.RawIOBase):
    """A process's stdout as a readable binary file."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._proc.read(min(len(buf), READ_SIZE))
        n = len(data)
        buf[:n] = data
        return n


Member = tuple[str, "Readable | None"]  # (name, content; None unless a regular file)


@contextmanager
def read_files(host: Host, root: str, paths: Sequence[str]) -> Iterator[Iterator[Member]]:
    """Yield an iterator of ``(path, reader)`` for the files tar sends, in its order.

    A path that vanished or stopped being a regular file is simply missing or comes
    with ``None``; the caller compares with what it asked for. Read each reader to
    its end (or not at all) before advancing. tar's own exit status is not an error
    (1 = "file changed as we read it", 2 = a file vanished): the hash check decides.
    """
    proc = host.start(f"cd -- {sh(root)} || exit 3\nexec {CREATE}")
    feeder = threading.Thread(target=_feed, args=(proc, paths), daemon=True,
                              name="forge-tar-names")
    feeder.start()
    done = False
    try:
        yield _members(proc)
        done = True
    finally:
        if not done:
            proc.kill()
        feeder.join(timeout=30)
        status = proc.wait(timeout=60) if done else None
        if done and status not in (0, 1, 2):
            err = proc.stderr().decode("utf-8", "replace").strip()[-400:]
            raise RemoteCommandError(f"tar on {host.name} failed (exit {status}): {err}",
                                     exit_status=status)


def _feed(proc: Process, paths: Sequence[str]) -> None:
    # A thread: tar starts writing the archive before it has read every name. The
    # names are encoded a piece at a time (not all of them at once: 2 MiB at 50,000).
    try:
        for pos in range(0, len(paths), 1024):
            proc.write(b"".join(encode(p) + b"\0" for p in paths[pos:pos + 1024]))
        proc.close_stdin()
    except (OSError, RemoteCommandError):
        pass  # tar died; the reader sees the end of the stream and the status says why


def _broken(e: Exception) -> BackupError:
    return BackupError(f"the file stream from the host broke off: {e}",
                       hint="check the SSH connection and run the backup again")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _MemberReader:
    """A member's content; a stream cut inside it becomes a :class:`BackupError`."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise _broken(e) from None


def _members(proc: Process) -> Iterator[Member]:
    raw = io.BufferedReader(ProcessReader(proc), buffer_size=READ_SIZE)
    try:
        with tarfile.open(fileobj=raw, mode="r|", encoding="utf-8",
                          errors="surrogateescape") as tar:
            while (info := tar.next()) is not None:
                # A streamed TarFile keeps every member it met: 16 MiB at 50,000 files.
                tar.members.clear()  # type: ignore[attr-defined]  # not in typeshed
                body = tar.extractfile(info) if info.isreg() else None
                yield info.name, (_MemberReader(body) if body is not None else None)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _broken(e) from None


# --- restore: runner -> host -------------------------------------------------------


def write_tree(host: Host, dest: str, entries: Iterable[tarfile.TarInfo],
               content: Callable[[tarfile.TarInfo], Iterable[bytes | memoryview]]) -> None:
    """Extract ``entries`` into ``dest`` (created) on the host with ``tar``.

    ``content(info)`` gives a regular file's bytes; if it raises, extraction is
    killed and the exception propagates (the caller removes ``dest``). Content
    shorter or longer than ``info.size`` is an error; the iterator is always run to
    its end, so checks that fire only there (a hash, age's final chunk) do run.
    """
    # mkdir first, on its own: a kill must never leave a child that creates it later.
    host.makedirs(dest)
    proc = host.start(f"cd -- {sh(dest)} && exec {EXTRACT}")
    try:
        out = _TarWriter(proc.write)
        for info in entries:
            out.member(info, content(info) if info.isreg() else ())
        out.close()
    except (OSError, RemoteCommandError) as e:
        proc.kill()
        status = proc.wait(timeout=30)
        err = proc.stderr().decode("utf-8", "replace").strip()[-400:]
        raise BackupError(f"writing files into {dest} on {host.name} failed "
                          f"(tar exit {status}): {err or e}") from None
    except BaseException:
        proc.kill()
        raise
    status = proc.wait(timeout=None)
    if status != 0:
        err = proc.stderr().decode("utf-8", "replace").strip()[-400:]
        raise BackupError(f"tar could not extract into {dest} on {host.name} "
                          f"(exit {status}): {err}")


class _TarWriter:
    """The tar stream format, written straight to ``write``: each member's PAX header
    (built by :mod:`tarfile`), its content as the caller's chunks, zeros to the next
    512-byte block; two zero blocks and a pad to a whole record at the end - the bytes
    ``tarfile`` would write, without copying the content through its buffers.

    Headers and small chunks are gathered into writes of about ``READ_SIZE``; a chunk
    that large or larger is written as it is.
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._pending: list[bytes] = []
        self._held = 0
        self._offset = 0

    def member(self, info: tarfile.TarInfo, chunks: Iterable[bytes | memoryview]) -> None:
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        size = info.size if info.isreg() else 0
        done = 0
        for chunk in chunks:
            if done + len(chunk) > size:
                raise OSError(f"the content of {info.name!r} is longer than its recorded size")
            done += len(chunk)
            if chunk:
                self._put(chunk)
        if done != size:
            raise OSError(f"unexpected end of data: {info.name!r} is {done} bytes, "
                          f"{size} recorded")
        if size % tarfile.BLOCKSIZE:
            self._put(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._put(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self._offset % tarfile.RECORDSIZE:
            self._put(tarfile.NUL * (tarfile.RECORDSIZE - self._offset % tarfile.RECORDSIZE))
        self._flush()

    def _put(self, data: bytes | memoryview) -> None:
        # A view is copied before it is held or written: restore reuses the buffer it
        # is a view of once the next chunk is asked for.
        data = data if isinstance(data, bytes) else bytes(data)
        self._offset += len(data)
        if len(data) >= READ_SIZE:
            self._flush()
            self._write(data)
            return
        self._pending.append(data)
        self._held += len(data)
        if self._held >= READ_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._held = 0
            self._write(data)


def tar_info(path: str, kind: str, mode: int, mtime_ns: int, *, size: int = 0,
             target: str | None = None) -> tarfile.TarInfo:
    """A PAX member carrying the exact nanosecond mtime."""
    info = tarfile.TarInfo(path)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
                 "symlink": tarfile.SYMTYPE}[kind]
    info.mode, info.size = mode, size if kind == "file" else 0
    info.mtime = mtime_ns // 1_000_000_000
    sec, ns = divmod(mtime_ns, 1_000_000_000)
    info.pax_headers = {"mtime": f"{sec}.{ns:09d}"}
    if target is not None:
        info.linkname = target
    info.uname = info.gname = ""
    return info
