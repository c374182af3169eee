"""Connecting to an environment's hosts, begun before forge.yml is validated.

`preconnect` opens the TCP connection and runs the SSH key exchange only; the host
key is checked and the user authenticated by `open_hosts` after validation, on that
connection when it is the one it would make, on a new one otherwise.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lab.sshd import SshHost, generate_ed25519

from forge_ci.config import load
from forge_ci.errors import ConnectError, HostKeyError
from forge_ci.remote.dial import Dial
from forge_ci.targets import Preconnected, open_hosts, peek_hosts, preconnect


def _forge_yml(tmp_path: Path, host: str, port: int | str) -> Path:
    path = tmp_path / "forge.yml"
    path.write_text("version: 1\nproject: site\nenvironments:\n  production:\n"
                    f"    hosts: [{{host: {host}, port: {port}, user: forgedeploy}}]\n"
                    "    path: /srv/site\n  staging:\n    path: ./staging\n")
    return path


def _log(host: SshHost) -> str:
    return host.log_path.read_text(errors="replace")


def test_peek_reads_only_literal_hosts(tmp_path: Path) -> None:
    assert peek_hosts(_forge_yml(tmp_path, "10.0.0.5", 2222), "production") == [("10.0.0.5", 2222)]
    assert peek_hosts(tmp_path / "forge.yml", "staging") == []  # local: nothing to reach
    assert peek_hosts(tmp_path / "forge.yml", "nope") == []
    assert peek_hosts(_forge_yml(tmp_path, "${HOST}", 22), "production") == []
    assert peek_hosts(_forge_yml(tmp_path, "a.example", '"22"'), "production") == []
    (tmp_path / "forge.yml").write_text("environments: [")
    assert peek_hosts(tmp_path / "forge.yml", "production") == []
    assert peek_hosts(tmp_path / "missing.yml", "production") == []


def test_nothing_is_dialled_without_both_ssh_secrets(tmp_path: Path) -> None:
    path = _forge_yml(tmp_path, "127.0.0.1", 1)
    assert preconnect(path, "production", {"FORGE_KNOWN_HOSTS": "x"}).dials == {}
    assert preconnect(path, "production", {"FORGE_SSH_KEY": "x"}).dials == {}


@pytest.mark.lab
def test_the_early_connection_is_the_one_used(sshd_host: SshHost, tmp_path: Path) -> None:
    path = _forge_yml(tmp_path, sshd_host.host, sshd_host.port)
    environ = sshd_host.env()
    before = _log(sshd_host).count("Connection from")  # the lab's own start-up probe
    early = preconnect(path, "production", environ)
    assert list(early.dials) == [(sshd_host.host, sshd_host.port)]
    config = load(path, environ, "production").environment("production")
    hosts = open_hosts(config, environ, early)
    try:
        assert hosts[0].run("echo ok").stdout == b"ok\n"
    finally:
        for h in hosts:
            h.close()
    assert _log(sshd_host).count("Connection from") == before + 1  # no second one
    assert early.dials[(sshd_host.host, sshd_host.port)].take() is None  # taken, not left


@pytest.mark.lab
def test_a_changed_host_key_is_refused_before_authenticating(sshd_host: SshHost,
                                                             tmp_path: Path) -> None:
    path = _forge_yml(tmp_path, sshd_host.host, sshd_host.port)
    host_id = sshd_host.known_hosts.split()[0]
    other = " ".join(generate_ed25519().public.split()[:2])
    environ = {**sshd_host.env(), "FORGE_KNOWN_HOSTS": f"{host_id} {other}\n"}
    early = preconnect(path, "production", environ)
    assert early.dials  # the key exchange ran with the pinned key's type
    config = load(path, environ, "production").environment("production")
    with pytest.raises(HostKeyError, match="has CHANGED"):
        open_hosts(config, environ, early)
    assert "Accepted publickey" not in _log(sshd_host)


@pytest.mark.lab
def test_an_early_connection_that_does_not_fit_is_dropped(sshd_host: SshHost) -> None:
    from forge_ci.config.models import EnvironmentConfig, HostConfig

    # Dialled, but its key exchange never begun (as when the pins did not parse then).
    dial = Dial(sshd_host.host, sshd_host.port, 15.0)
    early = Preconnected({(sshd_host.host, sshd_host.port): dial})
    config = EnvironmentConfig(path="/srv/site", hosts=(
        HostConfig(host=sshd_host.host, port=sshd_host.port, user=sshd_host.user),))
    hosts = open_hosts(config, sshd_host.env(), early)
    try:
        assert hosts[0].run("echo ok").stdout == b"ok\n"
    finally:
        for h in hosts:
            h.close()
    assert dial.take() is None


def test_an_early_connection_that_failed_fails_as_a_new_one_would() -> None:
    from forge_ci.config.models import EnvironmentConfig, HostConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    key = generate_ed25519()
    environ = {"FORGE_SSH_KEY": key.private,
               "FORGE_KNOWN_HOSTS": f"[127.0.0.1]:{port} {' '.join(key.public.split()[:2])}\n"}
    config = EnvironmentConfig(path="/srv/site", hosts=(
        HostConfig(host="127.0.0.1", port=port, user="forgedeploy"),))
    early = Preconnected({("127.0.0.1", port): Dial("127.0.0.1", port, 15.0)})
    with pytest.raises(ConnectError, match="cannot reach") as early_error:
        open_hosts(config, environ, early)
    with pytest.raises(ConnectError, match="cannot reach") as fresh_error:
        open_hosts(config, environ)
    assert str(early_error.value) == str(fresh_error.value)


def test_the_command_line_of_a_deploy_loads_neither_pydantic_nor_paramiko() -> None:
    # What lets a deploy dial its hosts before the biggest imports of a run.
    code = ("import sys; from forge_ci import cli; cli.build_parser('deploy'); "
            "print(sorted({'pydantic', 'paramiko'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_doctor_default_is_the_doctors_own() -> None:
    from forge_ci.deploy import cli, doctor

    assert cli._MIN_FREE_MB == doctor.MIN_FREE_MB


def test_a_bad_artifact_is_reported_without_waiting_for_a_slow_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import time

    from forge_ci import cli

    # A port that accepts connections and never says anything: the SSH banner would
    # be waited for until the connect timeout (15 s).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        key = generate_ed25519()
        env = {"FORGE_SSH_KEY": key.private,
               "FORGE_KNOWN_HOSTS": f"[127.0.0.1]:{port} {' '.join(key.public.split()[:2])}\n"}
        path = _forge_yml(tmp_path, "127.0.0.1", port)
        started = time.monotonic()
        code = cli.main(["deploy", "production", "--config", str(path), "--artifact",
                         str(tmp_path / "no-artifact"), "--json"], env)
        took = time.monotonic() - started
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["kind"] == "ArtifactError", data
    assert "is not a forge artifact" in data["error"]
    assert took < 5
