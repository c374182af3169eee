"""forge-ci in a process of its own, for a test to SIGKILL at a chosen moment.

Runs fork from a multiprocessing forkserver that imported forge once: a fresh
interpreter would spend about a second importing paramiko, boto3 and cryptography
on every run, and a fault suite starts dozens. Each run is a real, separate process
running ``forge_ci.cli.main`` in a process group of its own (so forge's children,
such as the local ``tar``, die with it), its stdout and stderr going to a file the
test watches for the line that starts a phase.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from forge_ci.cli import main

_PRELOAD = ["forge_ci.cli", "forge_ci.deploy.cli", "forge_ci.backup.cli",
            "forge_ci.build.cli", "forge_ci.remote.ssh", "forge_ci.store.s3", "paramiko",
            "boto3", "botocore.session", __name__]
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(_PRELOAD)


def _child(argv: Sequence[str], env: Mapping[str, str], log: str) -> None:
    os.setpgid(0, 0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Unbuffered text streams: the test must see a line as soon as forge writes it.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.exit(main(list(argv), dict(env)))


class Run:
    """One forge-ci run: ``Run(argv, env, log)``, then ``wait_for`` / ``kill`` / ``wait``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.argv, self.log = list(argv), log
        log.write_bytes(b"")
        self.started = time.monotonic()
        self._proc = _CTX.Process(target=_child, args=(self.argv, dict(env), str(log)),
                                  daemon=True)
        self._proc.start()
        self.killed_at: float | None = None

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self._proc.is_alive()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Return as soon as ``text`` appears in the output; fail if the run ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if not self.running():
                raise AssertionError(f"forge-ci {' '.join(self.argv[:2])} ended "
                                     f"(exit {self._proc.exitcode}) before printing "
                                     f"{text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {text!r} after {timeout:.0f}s:\n{self.output}")
            time.sleep(0.002)

    def kill(self) -> None:
        """SIGKILL forge and its process group: no handler, no cleanup, no goodbye."""
        self.killed_at = time.monotonic() - self.started
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._proc.join(30)

    def wait(self, timeout: float = 120.0) -> int:
        """The exit code of a run left to finish (negative: killed by that signal)."""
        self._proc.join(timeout)
        if self._proc.is_alive():
            self.kill()
            raise AssertionError(f"forge-ci still running after {timeout:.0f}s:\n{self.output}")
        code = self._proc.exitcode
        assert code is not None
        return code
