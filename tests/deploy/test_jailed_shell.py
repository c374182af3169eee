"""Deploying into a cPanel-style jailed shell (tests/lab/jail.py): a real sshd whose
session PATH holds only a chosen set of tools.

Without flock the deploy takes a mkdir lock (and recovers one whose holder died);
a second deploy while one holds it fails clearly; without tar forge refuses,
naming the tool, and changes nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab.jail import JAIL_USER, Jail, start_jail
from lab.policy import lab_required
from lab.users import chown_tree

from forge_ci.cli import main
from forge_ci.deploy.lock import Lock
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ExitCode
from forge_ci.remote.ssh import SshHost, parse_private_key

pytestmark = pytest.mark.lab


@dataclass
class JailedSite:
    jail: Jail
    src: Path
    env: dict[str, str]

    @property
    def path(self) -> Path:
        return self.jail.home / "example.ly"

    def forge(self, *args: str) -> int:
        return main([*args, "--config", str(self.src / "forge.yml")], env=self.env)

    def releases(self) -> list[str]:
        releases = self.path / "releases"
        # The staged copy (.forge-base-*) is made in the background after a deploy.
        return sorted(p.name for p in releases.iterdir()
                      if not p.name.startswith(".")) if releases.exists() else []

    def current(self) -> str | None:
        link = self.path / "current"
        return os.readlink(link) if link.is_symlink() else None

    def host(self) -> SshHost:
        s = self.jail.sshd
        return SshHost(s.host, s.port, s.user, key=parse_private_key(s.private_key),
                       known_hosts=s.known_hosts + "\n")


def _site(tmp_path: Path, without: tuple[str, ...]) -> Iterator[JailedSite]:
    with lab_required():
        jail = start_jail(without=without)
    src = tmp_path / "src"
    (src / "web").mkdir(parents=True)
    (src / "web" / "index.php").write_text("<?php echo 'example site';\n")
    (src / "web" / "wp").mkdir()
    (src / "web" / "wp" / "wp-load.php").write_text("<?php\n")
    (src / "forge.yml").write_text(f"""\
version: 1
project: example-site
environments:
  production:
    hosts: [{{ host: {jail.sshd.host}, port: {jail.sshd.port}, user: {JAIL_USER} }}]
    path: {jail.home}/example.ly
    marker: false
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **jail.sshd.env()}
    try:
        yield JailedSite(jail, src, env)
    finally:
        jail.stop()


@pytest.fixture
def no_flock(tmp_path: Path) -> Iterator[JailedSite]:
    yield from _site(tmp_path, ("flock",))


@pytest.fixture
def no_tar(tmp_path: Path) -> Iterator[JailedSite]:
    yield from _site(tmp_path, ("tar",))


def test_without_flock_the_deploy_takes_a_mkdir_lock_and_works(
        no_flock: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_flock
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    out = capsys.readouterr()
    assert "flock is not installed: using a mkdir lock" in out.out + out.err
    first = site.current()
    assert first is not None and first.startswith("releases/")
    assert (site.path / "current" / "web" / "index.php").read_text().endswith("'example site';\n")
    assert not (site.path / ".forge" / "lock.d").exists()  # released
    (site.src / "web" / "index.php").write_text("<?php echo 'second';\n")
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    assert site.current() != first
    assert (site.path / "current" / "web" / "index.php").read_text() == "<?php echo 'second';\n"


def test_a_second_deploy_while_the_mkdir_lock_is_held_fails_clearly(
        no_flock: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_flock
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    before = (site.current(), site.releases())
    capsys.readouterr()
    with site.host() as host:
        holder = Lock(host, Layout(str(site.path)), {"command": "deploy", "actor": "other-run"})
        with holder:
            assert holder.kind == "mkdir"
            code = site.forge("deploy", "production")
    err = capsys.readouterr().err
    assert code == ExitCode.FAILED, err
    assert "another forge run holds the lock" in err and "other-run" in err
    assert (site.current(), site.releases()) == before


def test_a_first_deploy_refused_by_the_lock_leaves_nothing_it_streamed(
        no_flock: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_flock
    with site.host() as host:
        holder = Lock(host, Layout(str(site.path)), {"command": "deploy", "actor": "other-run"})
        with holder:
            code = site.forge("deploy", "production")
    err = capsys.readouterr().err
    assert code == ExitCode.FAILED, err
    assert "another forge run holds the lock" in err
    assert site.current() is None and site.releases() == []
    # A first deploy streams before its lock answers: what it sent is gone.
    assert [n for n in os.listdir(site.path / ".forge") if n.startswith("incoming-")] == []
    assert site.forge("deploy", "production") == 0, capsys.readouterr()


def test_a_mkdir_lock_whose_holder_died_is_taken_over(
        no_flock: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_flock
    stale = site.path / ".forge" / "lock.d"
    stale.mkdir(parents=True)
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout
    (stale / "pid").write_text(dead)
    chown_tree(site.path, JAIL_USER)
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    assert not stale.exists()


def test_where_hard_links_fail_the_release_is_a_plain_copy_with_a_note(
        no_flock: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_flock
    # A cp whose hard links fail, as across file systems or in some jails: the
    # background staging after a deploy fails too, so the next deploy copies.
    cp = site.jail.bin / "cp"
    real = os.path.realpath(cp)
    cp.unlink()
    cp.write_text(f"#!/bin/sh\ncase \"$1\" in -al) echo 'cp: cannot create hard link' >&2; "
                  f"exit 1;; esac\nexec {real} \"$@\"\n")
    cp.chmod(0o755)
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    capsys.readouterr()
    (site.src / "web" / "index.php").write_text("<?php echo 'copied';\n")
    assert site.forge("deploy", "production") == 0, capsys.readouterr()
    out = capsys.readouterr()
    assert "hard links failed (cp -al): copied the live release instead" in out.out + out.err
    assert (site.path / "current" / "web" / "index.php").read_text() == "<?php echo 'copied';\n"
    assert (site.path / "current" / "web" / "wp" / "wp-load.php").exists()


def test_without_tar_forge_refuses_naming_it_and_changes_nothing(
        no_tar: JailedSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = no_tar
    code = site.forge("deploy", "production")
    err = capsys.readouterr().err
    assert code != 0
    assert "lacks tar" in err and "nothing was changed" in err
    assert "GNU tar" in err  # what to ask the host for
    assert site.current() is None and site.releases() == []
