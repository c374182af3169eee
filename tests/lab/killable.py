"""forge-ci in a process of its own, for a test to SIGKILL at a chosen moment.

Runs fork from a multiprocessing forkserver that imported forge once: a fresh
interpreter would spend about a second importing paramiko, boto3 and cryptography
on every run, and a fault suite starts dozens. Each run is a real, separate process
running ``forge_ci.cli.main`` in a process group of its own (so forge's children,
such as the local ``tar``, die with it). Its stdout and stderr go into a FIFO the
test reads with ``select``, so it wakes the moment forge prints the line that starts
a phase and kills right then; a test checks that forge had not printed the next
phase's line, so a kill that came too late fails instead of passing unnoticed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from forge_ci.cli import main

from . import leaks

_PRELOAD = ["forge_ci.cli", "forge_ci.deploy.cli", "forge_ci.backup.cli",
            "forge_ci.build.cli", "forge_ci.remote.ssh", "forge_ci.store.s3", "paramiko",
            "boto3", "botocore.session", __name__]
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(_PRELOAD)


def _child(argv: Sequence[str], env: Mapping[str, str], fifo: str) -> None:
    os.setpgid(0, 0)
    fd = os.open(fifo, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Line-buffered text streams: the test must see a line as soon as forge writes it.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.exit(main(list(argv), dict(env)))


@dataclass(frozen=True)
class Phase:
    """Where to stop a run: as forge prints ``starts``, before it prints ``then``."""

    name: str
    starts: str  # the line forge prints as the phase starts
    then: str  # the line starting the phase after it: the kill must land before it
    serves: str = ""  # deploys: after the kill, the "old" release, the "new" or "either"

    def __str__(self) -> str:
        return self.name


class Run:
    """One forge-ci run: ``Run(argv, env, fifo)``, then ``wait_for`` / ``kill`` / ``wait``.
    ``fifo`` is a new path for the output pipe."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], fifo: Path) -> None:
        self.argv = list(argv)
        os.mkfifo(fifo, 0o600)
        self._out = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer: the FIFO never reads as ended before forge opens it.
        self._keep = os.open(fifo, os.O_WRONLY)
        self._buf = bytearray()
        self.started = time.monotonic()
        self.killed_at: float | None = None
        self._proc = _CTX.Process(target=_child, args=(self.argv, dict(env), str(fifo)),
                                  daemon=True)
        self._proc.start()

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def output(self) -> str:
        self._read(0)
        return self._buf.decode(errors="replace")

    def running(self) -> bool:
        return self._proc.is_alive()

    def _read(self, timeout: float) -> None:
        if self._out < 0:
            return
        ready, _, _ = select.select([self._out], [], [], timeout)
        while ready:
            try:
                data = os.read(self._out, 65536)
            except BlockingIOError:
                return
            self._buf += data
            ready = bool(data)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Return as soon as ``text`` appears in the output; fail if the run ends first."""
        deadline = time.monotonic() + timeout
        wanted = text.encode()
        while wanted not in self._buf:
            if not self.running():
                raise AssertionError(f"forge-ci {' '.join(self.argv[:2])} ended "
                                     f"(exit {self._proc.exitcode}) before printing "
                                     f"{text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {text!r} after {timeout:.0f}s:\n{self.output}")
            self._read(0.05)

    def kill(self) -> None:
        """SIGKILL forge and its process group: no handler, no cleanup, no goodbye."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.killed_at = time.monotonic() - self.started
        self._proc.join(30)
        self._close()

    def wait(self, timeout: float = 120.0) -> int:
        """The exit code of a run left to finish (negative: killed by that signal)."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"forge-ci still running after {timeout:.0f}s:\n"
                                     f"{self.output}")
            self._read(0.05)
        self._proc.join()
        self._close()
        code = self._proc.exitcode
        assert code is not None
        return code

    def _close(self) -> None:
        if self._keep >= 0:
            self._read(0)
            os.close(self._keep)
            os.close(self._out)
            self._keep = self._out = -1
            # What forge printed, errors included, must never show a secret.
            leaked = leaks.found_in(self._buf.decode(errors="replace"))
            assert not leaked, f"forge-ci printed a lab secret ({', '.join(leaked)})"
