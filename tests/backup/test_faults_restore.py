"""kill -9 of forge at every phase of a restore (between the database import and the
swap of the files included), S3 failing downloads, a full disk on the target. After
each, a plain re-run of the restore succeeds, brings back the snapshot's bytes and
rows, and leaves no staging directory behind."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from lab.killable import Phase, Run
from lab.mariadb import MariaDB
from lab.s3 import S3Server

from tests.backup.conftest import as_user, db_state, tree_state

from .backupsite import BackupSite, backup_site

pytestmark = [pytest.mark.faults, pytest.mark.lab]

RESTORE = [
    Phase("download", "downloading and authenticating", "staging files on"),
    Phase("staging", "staging files on", "importing into database"),
    Phase("import", "importing into database", "putting the restored files"),
    # Killed after the import, before or while the files are swapped in.
    Phase("swap", "putting the restored files", "restored snapshot"),
]


@dataclass
class Snapshot:
    """What a restore must bring back: the database's rows and schema, the files."""

    id: str
    rows: str
    files: dict[str, tuple[object, ...]]


@pytest.fixture(scope="module")
def rsite(mariadb_server: MariaDB, s3_server: S3Server) -> Iterator[BackupSite]:
    with backup_site(mariadb_server, s3_server, disk_mb=48, big=6_000_000) as s:
        yield s


@pytest.fixture(scope="module")
def snapshot(rsite: BackupSite) -> Snapshot:
    site = rsite.site
    # Megabytes of dump, so downloading and importing it take a moment to kill in.
    as_user(site.db, "INSERT INTO posts (title, body, created) VALUES "
                     f"('bulk', 0x{os.urandom(3 << 20).hex()}, NOW(6));", site.server)
    sid = rsite.cli("backup", "production", read=False)["snapshot_id"]
    return Snapshot(sid, db_state(site.server, site.db.name), tree_state(site.uploads))


@pytest.fixture
def snap(rsite: BackupSite, snapshot: Snapshot) -> Snapshot:
    """The snapshot to restore, after the live site moved on: rows and files changed,
    added and gone since."""
    site = rsite.site
    as_user(site.db, "UPDATE posts SET title = 'edited after the backup' WHERE id = 1;"
                     "DELETE FROM posts WHERE id = 2; INSERT INTO meta VALUES ('new', 'row');",
            site.server)
    (site.uploads / "a b.jpg").write_bytes(b"replaced after the backup\n")
    (site.uploads / "empty").unlink(missing_ok=True)
    (site.uploads / "added-later.txt").write_bytes(b"new\n")
    site.chown()
    assert db_state(site.server, site.db.name) != snapshot.rows
    return snapshot


def _wait_for_staging(rsite: BackupSite, run: Run) -> None:
    """Until files arrive in the staging directory on the host."""
    deadline = time.monotonic() + 60
    while not any(p.is_file() for d in rsite.staging_dirs() for p in d.rglob("*")):
        assert run.running() and time.monotonic() < deadline, run.output
        time.sleep(0.002)


def _restore(rsite: BackupSite, snapshot: Snapshot, capsys: pytest.CaptureFixture[str],
             *, expect: int = 0) -> None:
    """``forge-ci restore production --snapshot ID --yes``, the plain re-run."""
    rc = rsite.site.run("restore", "production", "--snapshot", snapshot.id, "--yes",
                        capsys=capsys)
    assert rc == expect, rsite.site.last_err
    assert "Traceback" not in rsite.site.last_err


def _restored(rsite: BackupSite, snapshot: Snapshot) -> None:
    site = rsite.site
    assert db_state(site.server, site.db.name) == snapshot.rows
    assert tree_state(site.uploads) == snapshot.files
    assert rsite.staging_dirs() == []


def _live_untouched(rsite: BackupSite, snapshot: Snapshot) -> None:
    site = rsite.site
    assert db_state(site.server, site.db.name) != snapshot.rows
    assert (site.uploads / "added-later.txt").exists()


@pytest.mark.parametrize("phase", RESTORE, ids=str)
def test_kill_9_during_restore(rsite: BackupSite, snap: Snapshot, phase: Phase,
                               capsys: pytest.CaptureFixture[str]) -> None:
    run = rsite.spawn("restore", "production", "--snapshot", snap.id, "--yes")
    run.wait_for(phase.starts)
    if phase.name == "staging":
        _wait_for_staging(rsite, run)
    run.kill()
    assert phase.then not in run.output, f"killed too late, after {phase}:\n{run.output}"
    if phase.name in ("download", "staging"):
        _live_untouched(rsite, snap)
    _restore(rsite, snap, capsys)
    _restored(rsite, snap)


def test_kill_9_during_a_restore_drill(rsite: BackupSite, snap: Snapshot,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A drill (--to-dir, --database) killed while staging: the same command run again
    restores into the same places."""
    site = rsite.site
    drill_db = f"{site.db.name}_drill"
    site.server.sql(f"CREATE DATABASE `{drill_db}`; GRANT ALL ON `{drill_db}`.* TO "
                    f"'{site.db.user}'@'%'; GRANT ALL ON `{drill_db}`.* TO "
                    f"'{site.db.user}'@'localhost';")
    to_dir = site.root / "drill"
    args = ("restore", "production", "--snapshot", snap.id, "--to-dir", str(to_dir),
            "--database", drill_db)
    try:
        run = rsite.spawn(*args)
        run.wait_for("staging files on")
        _wait_for_staging(rsite, run)
        run.kill()
        assert site.run(*args, capsys=capsys) == 0, site.last_err
        assert db_state(site.server, drill_db) == snap.rows
        assert tree_state(to_dir / "shared/web/app/uploads") == snap.files
        assert rsite.staging_dirs() == []
        _live_untouched(rsite, snap)
    finally:
        site.server.sql(f"DROP DATABASE IF EXISTS `{drill_db}`;")
        shutil.rmtree(to_dir, ignore_errors=True)
    _restore(rsite, snap, capsys)


def test_s3_failing_downloads(rsite: BackupSite, snap: Snapshot,
                              capsys: pytest.CaptureFixture[str]) -> None:
    # Each connection dies after ~1 kB: resuming reads (which a 1 MB cut allows now
    # that objects are 2 MiB) cannot get a segment through.
    rsite.s3_proxy.set(drop_after_bytes_down=1_000)
    try:
        _restore(rsite, snap, capsys, expect=1)
    finally:
        rsite.s3_proxy.clear()
    assert rsite.s3_proxy.stats().dropped >= 2
    _live_untouched(rsite, snap)
    assert rsite.staging_dirs() == []
    _restore(rsite, snap, capsys)
    _restored(rsite, snap)


def test_full_disk_on_the_target(rsite: BackupSite, snap: Snapshot,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ballast = rsite.fill_disk(1 << 20)  # the snapshot's files need several MB to stage
    try:
        _restore(rsite, snap, capsys, expect=1)
        _live_untouched(rsite, snap)
        assert rsite.staging_dirs() == []
    finally:
        ballast.unlink()
    _restore(rsite, snap, capsys)
    _restored(rsite, snap)


def test_a_restore_of_another_snapshot_clears_what_a_killed_one_staged(
        rsite: BackupSite, snap: Snapshot, capsys: pytest.CaptureFixture[str]) -> None:
    """The re-run need not restore the same snapshot (a nightly backup may have made
    a newer latest one in between): no staging of the killed restore stays behind."""
    site = rsite.site
    run = rsite.spawn("restore", "production", "--snapshot", snap.id, "--yes")
    run.wait_for("staging files on")
    _wait_for_staging(rsite, run)
    run.kill()
    newer = rsite.cli("backup", "production", read=False)["snapshot_id"]
    assert site.run("restore", "production", "--snapshot", newer, "--yes", capsys=capsys) == 0
    assert rsite.staging_dirs() == []
    _restore(rsite, snap, capsys)
    _restored(rsite, snap)
