"""The target seam: a host is somewhere forge can run shell commands.

A :class:`Host` has two transport operations; every implementation provides them:

``run(script, input=..., timeout=..., check=True)``
    Run ``script`` with ``/bin/sh`` on the host, feed ``input`` to its stdin, wait,
    and return its exit status, stdout and stderr. With ``check=True`` (the
    default) a non-zero status raises :class:`RemoteCommandError`. Not atomic by
    itself.

``start(script)``
    Start ``script`` and return a :class:`Process` whose stdin and stdout are
    streams, both ways, for data that must never sit whole in memory (release
    tarballs, database dumps) and for holding a lock as long as the connection
    lives.

``compress_streams``
    True where a byte streamed costs more than compressing it (SSH: encryption on
    both ends, a network between); False for a local pipe, where compressing only
    adds work. Senders of large streams (a release) compress when it is True and
    the host can decompress.

The file operations a release needs are built on ``run`` once, here, so every
transport behaves the same. Each raises :class:`RemoteCommandError` when it fails:

``read(path)``
    The file's bytes, or None when nothing is there.
``write_atomic(path, data, mode)``
    Replace ``path`` with ``data``: a temp file in the same directory, fsync,
    rename. Readers see the old content or the new, never a part. When writing
    the temp file fails, nothing is renamed: the old content stays and the temp
    file is gone.
``append(path, data)``
    Append ``data`` to ``path`` (created if missing). Not atomic: callers hold the
    deploy lock, so appends never interleave; a reader of a line-based log skips a
    line a killed run cut short.
``makedirs(*paths)``
    Create directories and their parents; existing ones are fine (idempotent).
``remove_trees(paths)``
    Delete files or directory trees; missing paths are fine (idempotent).
``point_link(link, target)``
    Make the symlink ``link`` point at ``target`` (kept as given, so a relative
    target stays relative): a new link beside it, renamed over it. There is no
    moment without ``link``; the temp link never stays behind. This is the switch.
``rename(src, dst)``
    Move ``src`` onto ``dst`` in one rename, replacing ``dst``.

:func:`batch` runs several such scripts (``*_script`` below) in one round trip, in
order, stopping at the first that fails and naming it as the helper alone would.

Secrets never go into ``script`` (command lines are visible in ``ps``): pass them
as ``input`` or write them with :meth:`Host.write_atomic` (mode 0600).

Every implementation passes the one contract suite in ``tests/remote``.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from forge_ci.errors import RemoteCommandError

# How much one read of a stream asks for, on every transport.
CHUNK_SIZE = 65536


def sh(*argv: str) -> str:
    """Quote argv into one shell command line."""
    return " ".join(shlex.quote(a) for a in argv)


# The scripts of the generic helpers below, for callers that run several in one
# round trip (:func:`forge_ci.remote.base.batch`); each exits non-zero on failure.

def write_atomic_script(path: str, mode: int = 0o644, durable: bool = True) -> str:
    """Stdin to ``path`` through a temporary file renamed into place; ``durable``:
    on disk before the rename (without it a crash may leave the file empty or
    short, for files whose readers treat that as missing)."""
    tmp = f"{path}.forge-tmp"
    sync = f" sync {sh(tmp)} 2>/dev/null;" if durable else ""
    return (f"umask 077; if cat > {sh(tmp)} && chmod {mode:o} {sh(tmp)}; then"
            f"{sync} mv -f -- {sh(tmp)} {sh(path)};"
            f" else rm -f -- {sh(tmp)}; exit 1; fi")


def append_text_script(path: str, text: str) -> str:
    """Append ``text`` (carried in the script itself) to ``path``."""
    return f"printf %s {sh(text)} >> {sh(path)}"


def point_link_script(link: str, target: str) -> str:
    tmp = f"{link}.forge-tmp"
    # rm only for a temp link a killed run left (a test is a builtin, rm a command).
    return (f"{{ {{ [ ! -e {sh(tmp)} ] && [ ! -L {sh(tmp)} ]; }} || rm -f -- {sh(tmp)}; }} && "
            f"ln -s -- {sh(target)} {sh(tmp)} && "
            f"mv -Tf -- {sh(tmp)} {sh(link)} || {{ rm -f -- {sh(tmp)}; exit 1; }}")


@dataclass(frozen=True)
class Part:
    """One step of a batch: its script, what it does (for the error), its stdin."""

    script: str
    what: str
    input: bytes | None = None


def batch(host: Host, parts: Sequence[Part]) -> None:
    """Run ``parts`` in order in one round trip; the first that fails stops the rest
    and raises as :meth:`Host.check` would for it alone. At most one part reads stdin."""
    if not parts:
        return
    feeds = [p.input for p in parts if p.input is not None]
    if len(feeds) > 1:
        raise ValueError("a batch carries at most one part's input")
    r = host.run(batch_script(parts), input=feeds[0] if feeds else None, check=False)
    check_batch(host, parts, r)


def batch_script(parts: Sequence[Part]) -> str:
    """The script :func:`batch` runs: each part in a subshell, in order; the first that
    fails ends it with exit 100 + its index. A part without input reads nothing, so
    the script may go first in a command whose stdin is for something else."""
    lines = []
    for i, part in enumerate(parts):
        stdin = "" if part.input is not None else " </dev/null"
        lines.append(f"( {part.script}\n){stdin} || exit {_FIRST_PART + i}")
    return "\n".join(lines) + "\n"


def check_batch(host: Host, parts: Sequence[Part], result: Result) -> None:
    """Raise for ``result`` of :func:`batch_script` as :meth:`Host.check` would for
    the part that failed alone (naming them all when none is known to have)."""
    if result.status == 0:
        return
    index = failed_index(result.status, parts)
    what = parts[index].what if index is not None else ", ".join(p.what for p in parts)
    host.check(result, what)


_FIRST_PART = 100  # a batch exits 100 + the index of the part that failed


def failed_part(error: RemoteCommandError, parts: Sequence[Part]) -> int | None:
    """The index of the part of ``parts`` whose failure made :func:`batch` raise
    ``error``; None when no part is known to have failed (the connection was lost)."""
    return failed_index(error.exit_status if error.exit_status is not None else -1, parts)


def failed_index(status: int, parts: Sequence[Part]) -> int | None:
    """The index of the part of ``parts`` that ended :func:`batch_script` with ``status``."""
    index = status - _FIRST_PART
    return index if 0 <= index < len(parts) else None


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def tail(self, lines: int = 8) -> str:
        err = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return "\n".join(err[-lines:])


class Process(abc.ABC):
    """A running command: write its stdin, read its stdout, then wait for it."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Write all of ``data`` to stdin; raises if the command has gone away."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """Send end-of-file on stdin."""

    @abc.abstractmethod
    def read(self, size: int = CHUNK_SIZE) -> bytes:
        """Read up to ``size`` bytes of stdout; ``b""`` at end of stream."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit and return the status."""

    @abc.abstractmethod
    def stderr(self) -> bytes:
        """What the command wrote to stderr (complete after :meth:`wait`)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the command (and, for SSH, its channel) now. Never raises: callers
        use it to clean up after a failure, often a lost connection."""

    def readline(self) -> bytes:
        out = bytearray()
        while not out.endswith(b"\n"):
            b = self.read(1)
            if not b:
                break
            out += b
        return bytes(out)


class Host(abc.ABC):
    """One target. ``name`` is what messages call it (``deploy@10.0.0.1:22``, ``local``)."""

    name: str
    compress_streams: bool = False

    @abc.abstractmethod
    def run(
        self,
        script: str,
        *,
        input: bytes | None = None,
        timeout: float | None = 600,
        check: bool = True,
    ) -> Result: ...

    @abc.abstractmethod
    def start(self, script: str) -> Process: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generic helpers ---------------------------------------------------

    def check(self, result: Result, what: str) -> Result:
        if result.status != 0:
            raise RemoteCommandError(
                f"{what} failed on {self.name} (exit {result.status})"
                + (f": {result.tail()}" if result.stderr.strip() else ""),
                exit_status=result.status,
            )
        return result

    def _do(self, script: str, what: str, input: bytes | None = None) -> Result:
        return self.check(self.run(script, input=input, check=False), what)

    def read(self, path: str) -> bytes | None:
        r = self.run(f"if [ -e {sh(path)} ]; then cat -- {sh(path)}; else exit 3; fi",
                     check=False)
        if r.status == 3:
            return None
        return self.check(r, f"reading {path}").stdout

    def write_atomic(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._do(write_atomic_script(path, mode), f"writing {path}", input=data)

    def append(self, path: str, data: bytes) -> None:
        self._do(f"cat >> {sh(path)}", f"appending to {path}", input=data)

    def makedirs(self, *paths: str) -> None:
        if paths:
            self._do(sh("mkdir", "-p", "--", *paths), f"creating {', '.join(paths)}")

    def remove_trees(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if paths:
            self._do(sh("rm", "-rf", "--", *paths), f"removing {', '.join(paths)}")

    def point_link(self, link: str, target: str) -> None:
        self._do(point_link_script(link, target), f"pointing {link} at {target}")

    def rename(self, src: str, dst: str) -> None:
        self._do(sh("mv", "-Tf", "--", src, dst), f"moving {src} to {dst}")
