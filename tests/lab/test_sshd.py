"""The lab's sshd: key-only login as the deploy user, pinned host keys,
independent hosts, and the failure scenarios tests rely on."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable

import paramiko
import pytest
from lab.sshd import SshHost, generate_ed25519, known_hosts


def connect(
    host: SshHost, *, pinned: str | None = None, key: str | None = None
) -> paramiko.SSHClient:
    """A paramiko client that trusts only `pinned` (default: the host's current key)."""
    client = paramiko.SSHClient()
    entry = paramiko.hostkeys.HostKeyEntry.from_line(pinned or host.known_hosts)
    assert entry is not None
    for name in entry.hostnames:
        client.get_host_keys().add(name, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.host,
        port=host.port,
        username=host.user,
        pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(key or host.private_key)),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0
    return out


def test_logs_in_as_deploy_user_with_pinned_key(sshd_host: SshHost) -> None:
    assert sshd_host.known_hosts.startswith(f"[127.0.0.1]:{sshd_host.port} ssh-ed25519 AAAA")
    assert sshd_host.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    with connect(sshd_host) as client:
        assert run(client, "id -un").strip() == "forgedeploy"


def test_openssh_client_works_too(sshd_host: SshHost) -> None:
    done = subprocess.run(
        sshd_host.ssh_argv("echo", "ok"), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_sftp_subsystem(sshd_host: SshHost) -> None:
    with connect(sshd_host) as client, client.open_sftp() as sftp:
        sftp.putfo(io.BytesIO(b"hello"), "lab-sftp-probe.txt")
        assert sftp.stat("lab-sftp-probe.txt").st_size == 5
        sftp.remove("lab-sftp-probe.txt")


def test_what_sshd_turned_down_is_printed_when_the_host_closes(
    ssh_hosts: Callable[[int], list[SshHost]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A client sees only "Channel closed." when sshd refuses a request; the reason
    is in sshd's log, which close() prints (pytest shows it beside a failed test)."""
    (host,) = ssh_hosts(1)
    with connect(host) as client:
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException, match="Channel closed"):
            channel.invoke_subsystem("no-such-subsystem")
    host.close()
    printed = capsys.readouterr().out
    assert f"sshd on port {host.port}: subsystem request for no-such-subsystem" in printed


def test_other_client_key_is_refused(sshd_host: SshHost) -> None:
    stranger = generate_ed25519()
    with pytest.raises(paramiko.AuthenticationException):
        connect(sshd_host, key=stranger.private)


def test_changed_host_key_is_refused(sshd_host: SshHost) -> None:
    old_pin = sshd_host.rotate_host_key()
    assert old_pin != sshd_host.known_hosts
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sshd_host, pinned=old_pin)
    with connect(sshd_host) as client:
        assert run(client, "echo ok").strip() == "ok"


def test_kill_connections_cuts_open_sessions(sshd_host: SshHost) -> None:
    with connect(sshd_host) as client:
        transport = client.get_transport()
        assert transport is not None and transport.is_active()
        assert sshd_host.kill_connections() > 0
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            run(client, "sleep 5; echo never")
    with connect(sshd_host) as client:
        assert run(client, "echo back").strip() == "back"


def test_stopped_host_refuses_then_comes_back(sshd_host: SshHost) -> None:
    sshd_host.stop()
    with pytest.raises((paramiko.SSHException, OSError)):
        connect(sshd_host)
    sshd_host.start()
    with connect(sshd_host) as client:
        assert run(client, "true") == ""


def test_hosts_are_independent(ssh_hosts: Callable[[int], list[SshHost]]) -> None:
    first, second = ssh_hosts(2)
    assert first.port != second.port
    assert first.known_hosts.split()[2] != second.known_hosts.split()[2]
    assert first.private_key == second.private_key
    pins = known_hosts([first, second])
    assert pins.count("\n") == 2

    first.rotate_host_key()
    first.stop()
    with connect(second) as client:
        assert run(client, "id -un").strip() == "forgedeploy"
