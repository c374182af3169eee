"""The local target: the same shell commands, run on this machine without SSH."""

from __future__ import annotations

import contextlib
import io
import subprocess
import tempfile
from typing import IO

from forge_ci.remote.base import CHUNK_SIZE, Host, Process, Result


class LocalProcess(Process):
    def __init__(self, script: str) -> None:
        # stderr goes to a file: a full stderr pipe must never block the command.
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
        self._p = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )

    def write(self, data: bytes) -> None:
        assert self._p.stdin is not None
        self._p.stdin.write(data)
        self._p.stdin.flush()

    def close_stdin(self) -> None:
        if self._p.stdin and not self._p.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._p.stdin.close()

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        out = self._p.stdout
        assert isinstance(out, io.BufferedReader)
        return out.read1(size)

    def wait(self, timeout: float | None = None) -> int:
        self.close_stdin()
        return self._p.wait(timeout)

    def stderr(self) -> bytes:
        self._err.seek(0)
        return self._err.read()

    def kill(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
            self._p.wait()


class LocalHost(Host):
    """A directory on this machine. ``name`` is ``local``."""

    def __init__(self, name: str = "local") -> None:
        self.name = name

    def run(
        self,
        script: str,
        *,
        input: bytes | None = None,
        timeout: float | None = 600,
        check: bool = True,
    ) -> Result:
        p = subprocess.run(
            ["/bin/sh", "-c", script],
            input=input if input is not None else b"",
            capture_output=True,
            timeout=timeout,
        )
        result = Result(p.returncode, p.stdout, p.stderr)
        return self.check(result, _what(script)) if check else result

    def start(self, script: str) -> Process:
        return LocalProcess(script)

    def close(self) -> None:
        pass


def _what(script: str) -> str:
    first = script.strip().splitlines()[0] if script.strip() else "command"
    return f"`{first[:80]}`"
