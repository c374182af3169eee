"""Restore writes only where backups belong, never code, never privileges, and never
while a deploy (or another restore) runs.

The hostile snapshots here are signed by the *pinned* key: what is checked is the
restore's own guard, not the signature (tests/backup/test_trust.py does that)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from forge_ci.backup import session
from forge_ci.backup.snapshot import FileEntry
from forge_ci.config import load
from forge_ci.deploy.lock import Lock, owner_info
from forge_ci.deploy.releases import Layout
from forge_ci.errors import LockedError
from forge_ci.remote import LocalHost

from . import forgery
from .conftest import Site, tree_state

UPLOADS = "shared/web/app/uploads"


def _live_code(site: Site) -> Path:
    web = site.root / "current" / "web"
    web.mkdir(parents=True)
    (web / "index.php").write_text("<?php real();\n")
    (site.root / "shared" / ".env").write_text("DB_PASSWORD=hunter2\n")
    return web / "index.php"


@pytest.mark.parametrize(("paths", "entry", "why"), [
    (("current",), "current/web/index.php", "'current' belongs to deploy"),
    ((".forge",), ".forge/log.jsonl", "'.forge' belongs to deploy"),
    (("shared",), "shared/.env", "holds 'shared', which is not under this environment's "
                                 "backup.paths (shared/web/app/uploads)"),
])
def test_paths_outside_backup_paths_are_never_restored(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str], paths: tuple[str, ...], entry: str,
        why: str) -> None:
    site: Site = make_site(store="file", big=10_000)
    site.json(capsys, "backup", "production", read=False)
    _live_code(site)
    before = tree_state(site.root)
    w = forgery.writer(site, site.signing_key)
    evil = forgery.content(w, entry, b"<?php evil();\n")
    sid = forgery.forge(site, paths=paths, files=(evil,), signing_key=site.signing_key)
    for extra in ((), ("--dry-run",)):
        assert site.run("restore", "production", "--snapshot", sid, "--yes", *extra,
                        capsys=capsys) == 2
        assert why in site.last_err
    assert tree_state(site.root) == before


def test_an_uploads_link_to_the_env_file_is_refused(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    good = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    _live_code(site)
    link = FileEntry(f"{UPLOADS}/env.txt", "symlink", 0o777, 1,
                     target="../../../../current/.env")
    sid = forgery.forge(site, paths=(UPLOADS,), files=(link,), base=good,
                        signing_key=site.signing_key)
    before = tree_state(site.root)
    assert site.run("restore", "production", "--snapshot", sid, "--yes", capsys=capsys) == 1
    assert "symlink 'shared/web/app/uploads/env.txt' points outside the snapshot's paths" \
        in site.last_err
    assert tree_state(site.root) == before

    # Such a link on the server is left out of the backup (with a warning), so the
    # snapshot stays restorable.
    (site.uploads / "env.txt").symlink_to("../../../../current/.env")
    report = site.json(capsys, "backup", "production", read=False)
    assert f"{UPLOADS}/env.txt" in report["skipped"]
    assert "not backing up symlink 'shared/web/app/uploads/env.txt'" in site.last_err
    assert site.json(capsys, "restore", "production", "--yes")["snapshot_id"] \
        == report["snapshot_id"]
    assert not os.path.lexists(site.uploads / "env.txt")


def test_setuid_setgid_and_sticky_bits_are_dropped(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    tool = site.uploads / "tool"
    tool.write_bytes(b"#!/bin/sh\nid\n")
    tool.chmod(0o6755)
    drop = site.uploads / "drop"
    drop.mkdir()
    drop.chmod(0o3777)
    site.json(capsys, "backup", "production", read=False)
    assert site.run("restore", "production", "--yes", capsys=capsys) == 0, site.last_err
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    assert stat.S_IMODE(drop.stat().st_mode) == 0o777


def test_dry_run_names_the_paths_it_would_replace(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    site.json(capsys, "backup", "production", read=False)
    assert site.run("restore", "production", "--yes", "--dry-run", capsys=capsys) == 0
    assert f"replaces {site.root}/{UPLOADS}" in site.last_json


def _deploy_lock(site: Site) -> Lock:
    return Lock(LocalHost(), Layout(str(site.root)), owner_info({"USER": "deployer"}, "deploy"))


def test_a_deploy_during_a_restore_waits_or_fails(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    site.json(capsys, "backup", "production", read=False)
    later = site.uploads / "added-later.txt"
    later.write_text("not in the snapshot\n")

    # A deploy holds the lock: the restore fails clearly and changes nothing.
    with _deploy_lock(site):
        assert site.run("restore", "production", "--yes", capsys=capsys) == 1
        assert "another forge run holds the lock (command deploy, actor deployer" \
            in site.last_err
        assert later.exists()

    # A restore holds the lock: a deploy cannot take it.
    environ = site.environ()
    t = session.target(load(site.config, environ, "production"), "production")
    with session.restore_host(t, environ, lock=True), pytest.raises(LockedError) as e:
        _deploy_lock(site).acquire()
    assert "command restore" in e.value.message

    # With lock_wait the restore waits for the deploy to finish, then runs.
    text = site.config.read_text()
    site.config.write_text(text.replace("    backup:\n", "    lock_wait: 30\n    backup:\n", 1))
    deploy = _deploy_lock(site)
    deploy.acquire()
    release = threading.Timer(2.0, deploy.release)
    release.start()
    started = time.monotonic()
    try:
        assert site.run("restore", "production", "--yes", capsys=capsys) == 0, site.last_err
    finally:
        release.join()
    assert time.monotonic() - started >= 1.5
    assert not later.exists()


def test_the_preview_link_is_never_restored() -> None:
    """A plan, no server: even a backup path named like the preview link is refused."""
    from datetime import UTC, datetime

    from forge_ci.backup.errors import RestoreRefused
    from forge_ci.backup.repo import SnapshotRef
    from forge_ci.backup.restore import plan_restore
    from forge_ci.backup.snapshot import Manifest
    from forge_ci.config.backup import BackupConfig

    sid = "20240115T031502Z-3f9a1c2b"
    manifest = Manifest(id=sid, time=datetime(2024, 1, 15, tzinfo=UTC), site="s",
                        environment="production", hostnames=(), tool="t", paths=("next",),
                        files=(FileEntry("next", "dir", 0o755, 1),))
    cfg = BackupConfig(store="file:///srv/b", paths=("next",))
    ref = SnapshotRef("s", "production", sid)
    assert plan_restore(ref, manifest, cfg, "/srv/site").files_live  # no preview: data
    with pytest.raises(RestoreRefused, match="'next' belongs to deploy"):
        plan_restore(ref, manifest, cfg, "/srv/site", preview_link="next")


def test_a_live_path_that_is_a_link_into_code_is_not_replaced(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    site.json(capsys, "backup", "production", read=False)
    # Someone made the live uploads path a link into a release: restoring over it
    # would replace code.
    release = site.root / "releases" / "r1" / "web" / "app"
    release.mkdir(parents=True)
    site.uploads.rename(release / "uploads")
    site.uploads.symlink_to("../../../releases/r1/web/app/uploads")
    before = tree_state(site.root)
    assert site.run("restore", "production", "--yes", capsys=capsys) == 2
    assert "shared/web/app/uploads" in site.last_err and "resolves into code" in site.last_err
    # Only the deploy lock's own files were touched.
    after = tree_state(site.root)
    assert {k: v for k, v in after.items() if not k.startswith(".forge")} \
        == {k: v for k, v in before.items() if not k.startswith(".forge")}
