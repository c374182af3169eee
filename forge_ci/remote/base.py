"""The target seam: a host is somewhere forge can run shell commands.

A :class:`Host` has exactly two transport operations, and everything forge does on
a server is built from them:

``run(script, input=...)``
    Run ``script`` with ``/bin/sh`` on the host, feed ``input`` to its stdin, wait,
    and return its exit status, stdout and stderr. With ``check=True`` (the
    default) a non-zero status raises :class:`RemoteCommandError`. Not atomic by
    itself: scripts that must be atomic use rename.

``start(script)``
    Start ``script`` and return a :class:`Process` whose stdin and stdout are
    streams, for data that must never sit whole in memory (release tarballs,
    database dumps) and for holding a lock as long as the connection lives.

Secrets never go into ``script`` (command lines are visible in ``ps``): pass them
as ``input`` or write them with :meth:`Host.write` (mode 0600).

The generic helpers below (read, write, exists, ...) are the same for every
transport and are covered by the contract tests in ``tests/remote``.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from forge_ci.errors import RemoteCommandError


def sh(*argv: str) -> str:
    """Quote argv into one shell command line."""
    return " ".join(shlex.quote(a) for a in argv)


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
    def read(self, size: int = 65536) -> bytes:
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

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        r = self.run(f"if [ -e {sh(path)} ]; then cat -- {sh(path)}; else exit 3; fi",
                     check=False)
        if r.status == 3:
            return None
        return self.check(r, f"reading {path}").stdout

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Replace ``path`` atomically: temp file in the same directory, fsync, rename."""
        tmp = f"{path}.forge-tmp"
        script = (
            f"umask 077 && cat > {sh(tmp)} && chmod {mode:o} {sh(tmp)}"
            f" && sync {sh(tmp)} 2>/dev/null; mv -f -- {sh(tmp)} {sh(path)}"
        )
        self.check(self.run(script, input=data, check=False), f"writing {path}")

    def append(self, path: str, line: bytes) -> None:
        """Append one line (callers hold the lock, so appends do not interleave)."""
        script = f"cat >> {sh(path)}"
        self.check(self.run(script, input=line, check=False), f"appending to {path}")

    def exists(self, path: str) -> bool:
        return self.run(f"[ -e {sh(path)} ] || [ -L {sh(path)} ]", check=False).status == 0

    def readlink(self, path: str) -> str | None:
        r = self.run(f"readlink -- {sh(path)}", check=False)
        return r.text.strip() if r.status == 0 else None

    def listdir(self, path: str) -> list[str]:
        r = self.run(f"[ -d {sh(path)} ] || exit 0; cd {sh(path)} && ls -1A", check=False)
        return sorted(self.check(r, f"listing {path}").text.splitlines())

    def makedirs(self, *paths: str) -> None:
        self.check(self.run(sh("mkdir", "-p", "--", *paths), check=False), "mkdir")

    def remove_trees(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if paths:
            self.check(self.run(sh("rm", "-rf", "--", *paths), check=False), "removing")
