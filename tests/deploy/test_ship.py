"""The release stream (forge_ci/deploy/ship.py) against real hosts: compressed where
the host has zstd and bytes cost (SSH), plain where it has no zstd or the target is
local; the release that lands is the artifact, entry for entry, either way."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab.faultproxy import FaultProxy
from lab.jail import JAIL_USER, start_jail
from lab.policy import lab_required
from lab.sshd import SshHost as LabSshd
from lab.sshd import start_sshd

from forge_ci.build.builder import Artifact
from forge_ci.build.manifest import Entry, Manifest, scan
from forge_ci.deploy.lock import Lock
from forge_ci.deploy.releases import Layout
from forge_ci.deploy.ship import _split, ship
from forge_ci.remote import Host, LocalHost
from forge_ci.remote.ssh import connector
from tests.deploy.conftest import LocalSite

# Text like PHP sources: a level-1 zstd stream is a small fraction of it.
_TEXT = b"<?php // a line of generated source, as vendor/ is full of\n" * 40_000


def _artifact(root: Path) -> Artifact:
    tree = root / "tree"
    (tree / "vendor" / "pkg" / "src").mkdir(parents=True)
    (tree / "web").mkdir()
    (tree / "vendor" / "pkg" / "src" / "Big.php").write_bytes(_TEXT)
    (tree / "web" / "random.bin").write_bytes(os.urandom(300_000))
    (tree / "web" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tree / "web" / "run.sh").chmod(0o755)
    (tree / "web" / "empty.txt").write_bytes(b"")
    (tree / "web" / "link").symlink_to("run.sh")
    root.chmod(0o755)
    return Artifact(root, scan(tree))


def _ship(host: Host, artifact: Artifact, release: Path) -> None:
    ship(host, artifact, str(release), None, sorted(artifact.manifest.entries), [],
         lambda _: None, generated={".env": (b"WP_ENV=production\n", 0o600)})


def _same_release(artifact: Artifact, release: Path) -> None:
    landed = scan(release).entries
    assert {k: v for k, v in landed.items() if k != ".env"} == dict(artifact.manifest.entries)
    assert (release / ".env").read_bytes() == b"WP_ENV=production\n"
    assert (release / ".env").stat().st_mode & 0o777 == 0o600


def _ssh(sshd: LabSshd, port: int | None = None) -> Host:
    known = sshd.known_hosts if port is None else sshd.known_hosts.replace(
        f":{sshd.port} ", f":{port} ")
    return connector(sshd.private_key, known)(sshd.host, port or sshd.port, sshd.user)


def _workdir(host: Host) -> Iterator[Path]:
    path = Path(host.run("mktemp -d").text.split()[-1])  # after any login banner
    yield path
    host.run(f"rm -rf {path}", check=False)


@pytest.mark.lab
def test_over_ssh_with_zstd_the_stream_is_compressed_and_the_release_is_the_artifact(
        sshd_host: LabSshd, fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "artifact")
    proxy = fault_proxy(sshd_host.port)
    with _ssh(sshd_host, proxy.port) as host:
        for work in _workdir(host):
            before = proxy.stats().bytes_up
            _ship(host, artifact, work / "r1")
            sent = proxy.stats().bytes_up - before
            _same_release(artifact, work / "r1")
    # The random file cannot shrink; the text (2.4 MB) nearly vanishes.
    assert sent < 300_000 + len(_TEXT) // 4, sent


@pytest.mark.lab
def test_a_host_without_zstd_gets_the_plain_stream_and_the_same_release(
        tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "artifact")
    with lab_required():
        jail = start_jail(without=("zstd",))  # a jailed shell: only its tools on PATH
    try:
        assert jail.sshd.user == JAIL_USER
        proxy = FaultProxy(jail.sshd.port).start()
        try:
            with _ssh(jail.sshd, proxy.port) as host:
                assert host.run("command -v zstd", check=False).status != 0
                before = proxy.stats().bytes_up
                _ship(host, artifact, jail.home / "r1")
                sent = proxy.stats().bytes_up - before
        finally:
            proxy.stop()
        _same_release(artifact, jail.home / "r1")
        assert sent > len(_TEXT) + 300_000, sent
    finally:
        jail.stop()


@pytest.mark.lab
def test_a_login_that_prints_before_the_command_does_not_garble_the_stream(
        tmp_path: Path) -> None:
    """A server whose sessions print a line first (a noisy shell start-up file, a
    forced banner command): the stream still asks the right question and lands."""
    artifact = _artifact(tmp_path / "artifact")
    with lab_required():
        sshd = start_sshd(extra_config=(
            'ForceCommand echo "Welcome to shared hosting"; eval "$SSH_ORIGINAL_COMMAND"',))
    try:
        with _ssh(sshd) as host:
            for work in _workdir(host):
                _ship(host, artifact, work / "r1")
                _same_release(artifact, work / "r1")
    finally:
        sshd.close()


def _many_files(root: Path, *, read_only_dir: bool = False) -> Artifact:
    """More entries than one stream carries: several streams unpack it at once."""
    tree = root / "tree"
    for i in range(1200):
        d = tree / "vendor" / f"pkg{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"F{i}.php").write_bytes(b"<?php // %d\n" % i * (i % 7))
    if read_only_dir:
        # Spans the middle of the listing: a tar that finished first would make it
        # read-only while another still writes into it.
        (tree / "vendor").chmod(0o555)
    root.chmod(0o755)
    return Artifact(root, scan(tree))


@pytest.mark.lab
@pytest.mark.parametrize("read_only_dir", [False, True])
def test_a_release_of_many_files_lands_whole_over_ssh(
        sshd_host: LabSshd, tmp_path: Path, read_only_dir: bool) -> None:
    artifact = _many_files(tmp_path / "artifact", read_only_dir=read_only_dir)
    with _ssh(sshd_host) as host:
        for work in _workdir(host):
            _ship(host, artifact, work / "r1")
            _same_release(artifact, work / "r1")
            host.run(f"chmod -R u+w {work}")


def test_a_local_target_gets_the_same_release(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "artifact")
    assert not LocalHost.compress_streams  # a pipe: compressing would only add work
    _ship(LocalHost(), artifact, tmp_path / "target" / "r1")
    _same_release(artifact, tmp_path / "target" / "r1")


def test_a_release_is_split_into_non_empty_parts_of_similar_cost() -> None:
    """An empty part would be an empty stream, which a plain remote tar refuses."""
    small = {f"vendor/f{i:04d}": Entry("file", 0o644, 100) for i in range(1200)}
    even = Manifest(small)
    assert [len(p) for p in _split(tuple(sorted(small)), even, 2)] == [600, 600]
    big_last = Manifest({**small, "zz.bin": Entry("file", 0o644, 10**10)})
    assert _split(tuple(sorted(big_last.entries)), big_last, 2) == [
        tuple(sorted(big_last.entries))]


# -- a first deploy streams before its lock -----------------------------------

def _incoming(site: LocalSite) -> list[str]:
    meta = site.target / ".forge"
    return sorted(n for n in os.listdir(meta) if n.startswith("incoming-")) if meta.exists() \
        else []


def _with_media(site: LocalSite) -> None:
    """Enough to still be streaming when the lock answers."""
    for i in range(40):
        (site.src / "web" / "media").mkdir(parents=True, exist_ok=True)
        (site.src / "web" / "media" / f"m{i}.bin").write_bytes(os.urandom(500_000))


def test_a_first_deploy_refused_by_the_lock_leaves_nothing_it_streamed(
        local_site: LocalSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = local_site
    _with_media(site)
    holder = Lock(LocalHost(), Layout(str(site.target)), {"command": "deploy",
                                                          "actor": "other-run"})
    with holder:
        code = site.forge("deploy", "local")
    err = capsys.readouterr().err
    assert code != 0 and "another forge run holds the lock" in err, err
    assert _incoming(site) == []
    assert not (site.target / "current").exists()
    assert not (site.target / "releases").exists() or not os.listdir(site.target / "releases")
    # The next run deploys as if the refused one had never been.
    assert site.forge("deploy", "local") == 0
    assert site.page() == "ok v1\n" and _incoming(site) == []


def test_a_first_deploy_keeps_what_it_streamed_early_and_leaves_nothing_else(
        local_site: LocalSite) -> None:
    site = local_site
    _with_media(site)
    assert site.forge("deploy", "local") == 0
    live = site.target / "releases" / site.current
    assert (live / "web" / "media" / "m7.bin").read_bytes() == (
        site.src / "web" / "media" / "m7.bin").read_bytes()
    assert _incoming(site) == []
    site.write("web/index.html", "ok v2\n")  # a redeploy: nothing streams early
    assert site.forge("deploy", "local") == 0
    assert site.page() == "ok v2\n" and _incoming(site) == []


def test_what_a_killed_first_deploy_streamed_is_removed_by_a_later_run(
        local_site: LocalSite) -> None:
    site = local_site
    meta = site.target / ".forge"
    (meta / "incoming-0123456789ab" / "web").mkdir(parents=True)
    (meta / "incoming-0123456789ab" / "web" / "index.html").write_text("half\n")
    old = time.time() - 3600
    os.utime(meta / "incoming-0123456789ab", (old, old))
    (meta / "incoming-fedcba987654").mkdir()  # another run's, still streaming: kept
    assert site.forge("deploy", "local") == 0
    for _ in range(50):  # the clean-up runs beside the deploy
        if _incoming(site) == ["incoming-fedcba987654"]:
            break
        time.sleep(0.1)
    assert _incoming(site) == ["incoming-fedcba987654"]
    assert site.page() == "ok v1\n"
