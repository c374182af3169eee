"""Several hosts: prepare all, then switch all; when one fails, every host goes back.

The lab's hosts share one machine, so each sshd runs in its own mount namespace
where the same deploy path is a different directory: like separate servers,
every host has its own <path> with the same name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab import sshd as labsshd
from lab._proc import spawn, wait_until
from lab.sshd import SshHost, known_hosts
from lab.users import chown_tree

from forge_ci.cli import main
from forge_ci.errors import ExitCode

MOUNT = Path("/srv/forge-lab-multihost")


@dataclasses.dataclass
class NamespacedHost(SshHost):
    disk: Path = Path("/nonexistent")

    def start(self) -> None:
        if self.running:
            return
        config = labsshd._write_config(self)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "$1" {MOUNT} && shift && exec "$@"',
            "sh",
            str(self.disk),
            labsshd.require_binary("sshd"),
            "-D",
            "-e",
            "-f",
            str(config),
        ]
        self._proc = spawn(argv, self.log_path)
        wait_until(
            lambda: labsshd._banner(self.port),
            what=f"sshd on {self.port}",
            timeout=15,
            log=self.log_path,
            proc=self._proc,
        )


@pytest.fixture
def hosts(
    lab_dir: Path, ssh_hosts: Callable[[int], list[SshHost]]
) -> Iterator[list[NamespacedHost]]:
    MOUNT.mkdir(parents=True, exist_ok=True)
    out = []
    for i, plain in enumerate(ssh_hosts(2)):
        plain.stop()
        disk = lab_dir / f"disk{i}"
        disk.mkdir()
        fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(plain) if f.init}
        host = NamespacedHost(**fields, disk=disk)
        host.start()
        out.append(host)
    chown_tree(lab_dir, out[0].user)
    yield out
    for h in out:
        h.stop()


def forge(src: Path, hosts: list[NamespacedHost], *args: str) -> int:
    env = {
        "FORGE_SSH_KEY": hosts[0].private_key,
        "FORGE_KNOWN_HOSTS": known_hosts(hosts),
        "PATH": os.environ["PATH"],
    }
    return main([*args, "--config", str(src / "forge.yml")], env=env)


def configure(src: Path, hosts: list[NamespacedHost], extra: str = "") -> None:
    hl = ", ".join(f"{{host: 127.0.0.1, port: {h.port}, user: {h.user}}}" for h in hosts)
    (src / "forge.yml").write_text(
        f"version: 1\nproject: multi\nenvironments:\n  prod:\n    hosts: [{hl}]\n"
        f"    path: {MOUNT}/site\n    marker: false\n{extra}"
    )


def live(host: NamespacedHost) -> str:
    return (host.disk / "site/current/web/index.html").read_text()


@pytest.fixture
def src(lab_dir: Path, hosts: list[NamespacedHost]) -> Path:
    src = lab_dir / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.html").write_text("v1\n")
    (src / "web/host-check.sh").write_text(
        # Fails on the second host only: a hook that meets one broken server.
        f'[ "$(cat {MOUNT}/which)" != "1" ]\n'
    )
    for i, h in enumerate(hosts):
        (h.disk / "which").write_text(str(i))
    configure(src, hosts)
    return src


def test_every_host_gets_the_release_and_every_host_goes_back(
    src: Path, hosts: list[NamespacedHost], capsys: pytest.CaptureFixture[str]
) -> None:
    assert forge(src, hosts, "deploy", "prod") == 0
    assert [live(h) for h in hosts] == ["v1\n", "v1\n"]

    # A failure on one host before the switch: no host switches.
    (src / "web/index.html").write_text("v2\n")
    configure(src, hosts, "    hooks: { before_switch: ['sh web/host-check.sh'] }\n")
    assert forge(src, hosts, "deploy", "prod") == ExitCode.FAILED
    assert [live(h) for h in hosts] == ["v1\n", "v1\n"]

    # A failure on one host after the switch: every host goes back.
    configure(src, hosts, "    hooks: { after_switch: ['sh web/host-check.sh'] }\n")
    assert forge(src, hosts, "deploy", "prod") == ExitCode.ROLLED_BACK
    assert [live(h) for h in hosts] == ["v1\n", "v1\n"]
    for h in hosts:
        states = [
            json.loads(x)["state"]
            for x in (h.disk / "site/.forge/log.jsonl").read_text().splitlines()
        ]
        assert states.count("bad") == 2

    configure(src, hosts)
    capsys.readouterr()
    assert forge(src, hosts, "deploy", "prod", "--json") == 0
    assert [live(h) for h in hosts] == ["v2\n", "v2\n"]
    out = json.loads(capsys.readouterr().out)
    assert [h["host"] for h in out["plan"]["hosts"]] == [
        f"{h.user}@127.0.0.1:{h.port}" for h in hosts
    ]


def test_a_shared_file_missing_on_one_host_is_refused_before_anything_changes(
    src: Path, hosts: list[NamespacedHost], capsys: pytest.CaptureFixture[str]
) -> None:
    configure(src, hosts, "    shared: [web/app/uploads, config/host.php]\n")
    for h in hosts:
        (h.disk / "site/shared/config").mkdir(parents=True)
        (h.disk / "site/shared/web/app/uploads").mkdir(parents=True)
    (hosts[0].disk / "site/shared/config/host.php").write_text("<?php // host 0\n")
    chown_tree(hosts[0].disk.parent, hosts[0].user)
    second = f"{hosts[1].user}@127.0.0.1:{hosts[1].port}"
    capsys.readouterr()

    # doctor names the host that lacks it, and says how to fix it.
    assert forge(src, hosts, "doctor", "prod", "--json", "--min-free-mb", "1") == 1
    report = json.loads(capsys.readouterr().out)
    [bad] = [c for c in report["checks"] if c["status"] == "fail"]
    assert (bad["host"], bad["check"]) == (second, "shared")
    assert "shared/config/host.php is missing here" in bad["detail"] and bad["hint"]

    # deploy refuses it before anything is written: no release, no current, anywhere.
    assert forge(src, hosts, "deploy", "prod") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert f"config/host.php is missing on {second}" in err
    for h in hosts:
        assert not (h.disk / "site/current").exists()
        assert not (h.disk / "site/releases").exists()
        assert not (h.disk / "site/shared/config/host.php").is_dir()

    (hosts[1].disk / "site/shared/config/host.php").write_text("<?php // host 1\n")
    assert forge(src, hosts, "doctor", "prod", "--min-free-mb", "1") == 0
    assert forge(src, hosts, "deploy", "prod") == 0
    for i, h in enumerate(hosts):
        assert (h.disk / "site/current/config/host.php").read_text() == f"<?php // host {i}\n"
