"""Real WordPress deployed over real SSH: what a Bedrock team would check by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lab.site import WordPressSite
from lab.sshd import SshHost

from forge_ci.errors import ExitCode
from tests.deploy.sshsite import Load, SshSite

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ssh_site(lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost) -> SshSite:
    return SshSite.create(lab_dir, wp_site(), [sshd_host])


def test_deploy_then_redeploy_under_load_then_bad_release_then_rollback(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ssh_site.forge("deploy", "production") == 0, ssh_site.site.logs()
    assert ssh_site.serves("v1")
    v1 = os.readlink(ssh_site.site.path / "current")

    ssh_site.set_version("v2")
    with Load(ssh_site.site.url + "/") as load:
        assert ssh_site.forge("deploy", "production") == 0
    assert ssh_site.serves("v2")
    assert load.failures == {}, load.statuses
    assert sum(load.statuses.values()) > 20

    # A release whose front page answers 500: rolled back by itself, exit 3.
    index = ssh_site.src / "web/index.php"
    good_index = index.read_text()
    index.write_text("<?php http_response_code(500); echo 'fatal error';\n")
    assert ssh_site.forge("deploy", "production") == ExitCode.ROLLED_BACK
    assert ssh_site.serves("v2")
    index.write_text(good_index)

    # Manual rollback to v1, then the release list says what happened.
    assert ssh_site.forge("rollback", "production") == 0
    assert ssh_site.serves("v1")
    assert os.readlink(ssh_site.site.path / "current") == v1
    capsys.readouterr()
    assert ssh_site.forge("releases", "production", "--json") == 0
    listing = json.loads(capsys.readouterr().out)["releases"]
    # Oldest first: v1 (live again), v2 (left by the manual rollback, still good), the bad one.
    assert [r["state"] for r in listing] == ["live", "rolled_back", "bad"]
    assert listing[0]["id"] == v1.removeprefix("releases/")


def test_env_is_private_to_the_deploy_user_and_marker_proves_php(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ssh_site.forge("deploy", "production", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    rid = out["release"]
    env = ssh_site.site.path / "current/.env"
    st = env.stat()
    assert oct(st.st_mode & 0o777) == "0o600"
    import pwd

    assert pwd.getpwuid(st.st_uid).pw_name == ssh_site.site.user
    import requests

    marker = requests.get(ssh_site.site.url + "/forge-release.php", timeout=10).text
    assert marker.strip() == f"forge-release:{rid}"
    assert ssh_site.site.db.password not in capsys.readouterr().err


def test_changed_host_key_is_refused_and_nothing_changes(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ssh_site.forge("deploy", "production") == 0
    before = os.readlink(ssh_site.site.path / "current")
    ssh_site.hosts[0].rotate_host_key()
    ssh_site.set_version("v2")
    assert ssh_site.forge("deploy", "production") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "CHANGED" in err and "Traceback" not in err
    assert os.readlink(ssh_site.site.path / "current") == before


def test_unknown_host_and_missing_secret(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    env = dict(
        ssh_site.env,
        FORGE_KNOWN_HOSTS="[127.0.0.1]:1 ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIIhHsmTk9m6rJ2wQy0yBHL1dUUx1N4iUX6l0WbBqTAbG\n",
    )
    assert ssh_site.forge("deploy", "production", env=env) == ExitCode.FAILED
    assert "not in FORGE_KNOWN_HOSTS" in capsys.readouterr().err
    env = {k: v for k, v in ssh_site.env.items() if k != "FORGE_SSH_KEY"}
    assert ssh_site.forge("deploy", "production", env=env) == ExitCode.USAGE
    assert "FORGE_SSH_KEY is not set" in capsys.readouterr().err
    env = {k: v for k, v in ssh_site.env.items() if k != "DB_PASSWORD"}
    assert ssh_site.forge("deploy", "production", env=env) == ExitCode.USAGE
    assert not (ssh_site.site.path / "current").exists()


def _spawn(site: SshSite) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forge_ci",
            "deploy",
            "production",
            "--config",
            str(site.src / "forge.yml"),
        ],
        env=dict(site.env, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("point", ["preparing", "sent", "hook"])
def test_kill_9_mid_deploy_keeps_the_old_release_and_the_next_deploy_just_works(
    ssh_site: SshSite, point: str
) -> None:
    assert ssh_site.forge("deploy", "production") == 0
    ssh_site.set_version("v2")
    if point == "hook":
        ssh_site.configure(ssh_site.extra + "    hooks: { before_switch: ['sleep 30'] }\n")
    else:
        (ssh_site.src / "web/app/big.bin").write_bytes(os.urandom(40 << 20))
    proc = _spawn(ssh_site)
    log = ssh_site.site.path / ".forge/log.jsonl"
    wanted = {"preparing": b"unlink", "sent": b"sent ", "hook": b"before_switch[0]"}[point]
    seen = b""
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    # "unlink" is in the plan, printed under the lock just before the release is logged.
    while wanted not in seen or (point == "preparing" and log.read_bytes().count(b"preparing") < 2):
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode()
        seen += proc.stdout.read() or b""
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if point == "sent":
        # The run may have switched before the signal landed: any good release will do.
        assert ssh_site.serves("v1") or ssh_site.serves("v2")
    else:
        assert ssh_site.serves("v1")
    ssh_site.configure()
    (ssh_site.src / "web/app/big.bin").unlink(missing_ok=True)
    assert ssh_site.forge("deploy", "production") == 0
    assert ssh_site.serves("v2")
    states = [json.loads(x) for x in log.read_text().splitlines()]
    if point != "sent":
        assert any(e["state"] == "removed" for e in states)  # the killed run's release


@pytest.mark.parametrize("on_host", [False, True], ids=["from-runner", "curl-on-host"])
def test_preview_route_keeps_a_bad_release_from_visitors(
        lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost,
        on_host: bool) -> None:
    site = wp_site(preview=True)
    s = SshSite.create(lab_dir, site, [sshd_host])
    on = "true" if on_host else "false"
    s.configure(f"    preview: {{ url: '{site.preview_url}', on_host: {on} }}\n")
    assert s.forge("deploy", "production") == 0
    assert s.serves("v1")
    index = s.src / "web/index.php"
    good = index.read_text()
    index.write_text("<?php http_response_code(500); echo 'fatal error';\n")
    with Load(site.url + "/") as load:
        # Failed before the switch: "nothing changed", not "rolled back".
        assert s.forge("deploy", "production") == ExitCode.FAILED
    assert load.failures == {}, load.statuses
    assert s.serves("v1")
    index.write_text(good)
    s.set_version("v2")
    with Load(site.url + "/") as load:
        assert s.forge("deploy", "production") == 0
    assert load.failures == {}, load.statuses
    assert s.serves("v2")


def test_connection_cut_mid_transfer_fails_cleanly_and_next_deploy_works(
        ssh_site: SshSite) -> None:
    assert ssh_site.forge("deploy", "production") == 0
    ssh_site.set_version("v2")
    (ssh_site.src / "web/app/big.bin").write_bytes(os.urandom(60 << 20))
    proc = _spawn(ssh_site)
    assert proc.stdout is not None
    seen = b""
    while b"unlink" not in seen:  # the plan is printed just before shipping starts
        line = proc.stdout.readline()
        assert line, seen.decode()
        seen += line
    time.sleep(0.3)
    ssh_site.hosts[0].kill_connections()
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == ExitCode.FAILED, (seen + out).decode()
    assert b"not touched" in out
    assert ssh_site.serves("v1")
    (ssh_site.src / "web/app/big.bin").unlink()
    assert ssh_site.forge("deploy", "production") == 0
    assert ssh_site.serves("v2")


def test_full_disk_on_the_target_fails_before_the_switch_and_frees_the_space(
        lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost) -> None:
    site = wp_site()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m,mode=0755", "tmpfs", str(site.path)],
                   check=True)
    try:
        subprocess.run(["chown", site.user, str(site.path)], check=True)
        s = SshSite.create(lab_dir, site, [sshd_host])
        assert s.forge("deploy", "production") == 0
        s.set_version("v2")
        (s.src / "web/app/big.bin").write_bytes(os.urandom(50 << 20))
        assert s.forge("deploy", "production") == ExitCode.FAILED
        assert s.serves("v1")
        assert len([d for d in os.listdir(site.path / "releases") if d[0] != "."]) == 1
        (s.src / "web/app/big.bin").unlink()
        assert s.forge("deploy", "production") == 0
        assert s.serves("v2")
    finally:
        site.stop()
        subprocess.run(["umount", "-l", str(site.path)], check=False)
