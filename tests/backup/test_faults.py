"""Interrupted backups leave nothing half done: no manifest, no open multipart upload,
earlier snapshots intact - whether S3 or the SSH connection drops mid-transfer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab.s3 import S3Server

from forge_ci.backup import layout
from forge_ci.backup.repo import Repository
from forge_ci.backup.take import Source, take_snapshot
from forge_ci.config import load
from forge_ci.remote import LocalHost
from forge_ci.store import StoreError
from forge_ci.store.s3 import MIN_PART_SIZE, S3Store

from .conftest import Site


def _store(server: S3Server, site: Site, endpoint: str) -> S3Store:
    bucket, prefix = site.config.read_text().split("store: s3://")[1].split()[0].split("/", 1)
    return S3Store(bucket, prefix, endpoint_url=endpoint, access_key_id=server.access_key_id,
                   secret_access_key=server.secret_access_key, region=server.region,
                   part_size=MIN_PART_SIZE, max_attempts=2, read_timeout=10.0)


def test_s3_dropping_mid_upload_leaves_no_snapshot_and_no_upload(  # type: ignore[no-untyped-def]
        make_site, fault_proxy, s3_server: S3Server,
        capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="s3")
    proxy = fault_proxy(s3_server.port)
    site.base_environ |= s3_server.env(proxy.url)
    first = site.json(capsys, "backup", "production", read=False)["snapshot_id"]

    # A new 12 MB file must go up in multipart parts; every connection now breaks
    # after 1 MB, so each part (and its retry) is cut mid-body.
    (site.uploads / "video.mp4").write_bytes(os.urandom(12_000_000))
    proxy.set(drop_after_bytes=1_000_000)
    cfg = load(site.config, site.environ(read=False), "production").environment("production").backup
    assert cfg is not None
    store = _store(s3_server, site, proxy.url)
    repo = Repository(store, "backup-lab", "production", recipients=[site.identity.recipient])
    source = Source(LocalHost(), str(site.root), "backup-lab", "production", ("local",))
    with pytest.raises(StoreError):
        take_snapshot(repo, source, cfg)
    assert proxy.stats().dropped >= 2

    proxy.clear()
    direct = _store(s3_server, site, s3_server.endpoint_url)
    assert [k.split("/")[-1] for k in direct.list(layout.SNAPSHOTS)] == [first]
    assert list(direct.incomplete_uploads()) == []
    assert list(direct.list(layout.LOCKS)) == []
    assert site.run("verify", "production", "--snapshot", first) == 0
    # And the next run, with the network back, completes.
    assert site.json(capsys, "backup", "production", read=False)["upload_files"] == 1


def test_ssh_dropping_mid_transfer_leaves_no_snapshot(  # type: ignore[no-untyped-def]
        make_site, fault_proxy, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", ssh=True)
    sshd = site.sshd
    assert sshd is not None
    proxy = fault_proxy(sshd.port)
    site.config.write_text(site.config.read_text().replace(f"port: {sshd.port}",
                                                           f"port: {proxy.port}"))
    site.base_environ["FORGE_KNOWN_HOSTS"] = sshd.known_hosts.replace(f":{sshd.port} ",
                                                                  f":{proxy.port} ")
    first = site.json(capsys, "backup", "production", read=False)["snapshot_id"]

    (site.uploads / "video.mp4").write_bytes(os.urandom(4_000_000))
    site.chown()
    proxy.set(drop_after_bytes_down=2_000_000)  # server -> runner: cut inside the tar
    started = time.monotonic()
    assert site.run("backup", "production", read=False, capsys=capsys) == 1
    assert time.monotonic() - started < 10, "the drop was noticed late"
    assert proxy.stats().dropped == 1
    assert "broke off" in site.last_err
    store = lab_dir / "store"
    assert [p.name for p in (store / "snapshots").rglob("*") if p.is_file()] == [first]
    assert not [p for p in store.rglob(".tmp-*")], "temporary files left in the store"
    assert not list((store / "locks").iterdir())

    proxy.clear()
    assert site.run("verify", "production", "--snapshot", first) == 0


def test_a_killed_backup_leaves_no_snapshot_and_prune_clears_what_it_stored(  # type: ignore[no-untyped-def]
        make_site, s3_server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="s3", big=10_000)
    first = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    with (site.uploads / "video.mp4").open("wb") as f:
        for _ in range(96):
            f.write(os.urandom(1 << 20))
    store = _store(s3_server, site, s3_server.endpoint_url)
    before = set(store.list(layout.DATA))
    proc = subprocess.Popen([sys.executable, "-m", "forge_ci", "--config", str(site.config),
                             "backup", "production"], env=site.environ(read=False),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # Kill once the video's first segments are stored, long before its last one.
    while len(set(store.list(layout.DATA)) - before) < 4 and proc.poll() is None:
        assert time.monotonic() < deadline, "no segment was stored"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no chance to clean anything up
    proc.wait()
    assert [k.split("/")[-1] for k in store.list(layout.SNAPSHOTS)] == [first]
    orphans = set(store.list(layout.DATA)) - before
    assert orphans  # stored by the killed run, named by no snapshot
    # Its lock stays until it is stale; pretend the hour has passed.
    [lock] = list(store.list(layout.LOCKS))
    store.delete(lock)
    store.put(f"locks/shared-{int(time.time()) - 7200}-{'0' * 16}", [b"stale"])

    plan = site.json(capsys, "prune", "production")
    assert plan["stale_locks"] == 1 and plan["delete_objects"] >= len(orphans)
    assert not orphans & set(store.list(layout.DATA))
    assert list(store.incomplete_uploads()) == []
    assert list(store.list(layout.LOCKS)) == []
    assert site.run("verify", "production", "--snapshot", first) == 0
    # And the next backup takes the video from scratch and completes.
    assert site.run("backup", "production", read=False) == 0
    assert site.run("verify", "production") == 0
