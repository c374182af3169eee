"""The SSH seam when the connection is cut under a running command: cleaning up after
it - killing the command, closing the host - never raises. A cleanup that raised would
replace the real error (a ForgeError, exit 1 with a message) with a traceback and
exit 70, "a bug": what a connection cut while a deploy recorded its release did."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest
from lab.faultproxy import FaultProxy
from lab.sshd import SshHost

from forge_ci.errors import ConnectError
from forge_ci.remote.ssh import SshHost as Target
from forge_ci.remote.ssh import SshProcess, parse_private_key

pytestmark = [pytest.mark.faults, pytest.mark.lab]


class _CutChannel:
    """A paramiko channel whose socket just broke, before paramiko's reader thread
    noticed: still open, and closing it means sending a message that cannot go."""

    closed = False

    def close(self) -> None:
        raise EOFError


def test_killing_a_command_whose_connection_broke_does_not_raise() -> None:
    SshProcess(_CutChannel(), "deploy@host").kill()  # type: ignore[arg-type]


def test_cleaning_up_after_a_cut_connection_never_raises(
        sshd_host: SshHost, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(sshd_host.port)
    key = parse_private_key(sshd_host.private_key)
    known = sshd_host.known_hosts.replace(f":{sshd_host.port} ", f":{proxy.port} ")
    # The deploy lock's way out, right as the reset arrives: close stdin, kill the
    # command if that fails, close the host.
    for _ in range(5):
        host = Target(sshd_host.host, proxy.port, sshd_host.user, key=key, known_hosts=known)
        proc = host.start("cat")
        proc.write(b"still here\n")
        assert proc.readline() == b"still here\n"
        proxy.kill_connections()
        with contextlib.suppress(ConnectError):
            proc.close_stdin()
        proc.kill()
        host.close()


def test_a_command_cut_off_is_a_lost_connection_not_a_failed_command(
        sshd_host: SshHost, fault_proxy: Callable[..., FaultProxy]) -> None:
    """Otherwise paramiko's closed channel reads as a command that exited -1: "the PHP
    reload command failed (exit -1)", and a probe such as ``Host.read`` caught by
    the cut would answer "no such file" instead of failing."""
    proxy = fault_proxy(sshd_host.port)
    host = Target(sshd_host.host, proxy.port, sshd_host.user,
                  key=parse_private_key(sshd_host.private_key),
                  known_hosts=sshd_host.known_hosts.replace(f":{sshd_host.port} ",
                                                            f":{proxy.port} "))
    proc = host.start("sleep 30")
    proxy.kill_connections()
    deadline = time.monotonic() + 10
    while host._transport.is_active():  # paramiko has seen the reset
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ConnectError, match="lost the SSH connection"):
        proc.wait(10)
    host.close()
