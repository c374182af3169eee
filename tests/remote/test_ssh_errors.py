"""SSH failures a user meets before any command runs: one clear error, no traceback."""

from __future__ import annotations

import http.server
import subprocess
import sys
import time
from collections.abc import Iterator

import paramiko
import pytest
from lab.webserver import serve

from forge_ci.errors import ConnectError
from forge_ci.remote.ssh import SshHost


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    serve(server)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _pinned(port: int) -> str:
    # A pinned key, so forge goes as far as the connection (an unpinned host is refused
    # before any connection is made).
    return f"[127.0.0.1]:{port} {_HOST_KEY}\n"


_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_a_port_that_is_not_ssh_is_one_clear_error(http_port: int) -> None:
    key = paramiko.RSAKey.generate(1024)
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        SshHost("127.0.0.1", http_port, "deploy", key=key, known_hosts=_pinned(http_port),
                timeout=10)
    assert time.monotonic() - started < 8  # the server's answer ends it, not the timeout
    assert "does not speak SSH" in info.value.message
    assert info.value.hint is not None and "port" in info.value.hint


def test_a_port_that_is_not_ssh_prints_no_traceback(http_port: int) -> None:
    # In a process of its own: pytest's log capture would hide what a user sees.
    script = (
        "import paramiko, time\n"
        "from forge_ci.errors import ConnectError\n"
        "from forge_ci.remote.ssh import SshHost\n"
        "try:\n"
        f"    SshHost('127.0.0.1', {http_port}, 'deploy', key=paramiko.RSAKey.generate(1024),"
        f" known_hosts={_pinned(http_port)!r}, timeout=10)\n"
        "except ConnectError as e:\n"
        "    print(e.message)\n"
        "time.sleep(0.5)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert "does not speak SSH" in p.stdout
    assert p.stderr == ""
