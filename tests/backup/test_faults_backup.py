"""kill -9 of forge at every phase of a backup, S3 failing parts, and kills at random
moments (sshd dropping mid-transfer: tests/backup/test_faults.py). After each: no snapshot is
lost or half-written (the killed one does not exist, every earlier one verifies),
and the next plain backup succeeds and verifies."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest
from lab.killable import Phase
from lab.mariadb import MariaDB
from lab.s3 import S3Server

from .backupsite import BackupSite, backup_site

pytestmark = [pytest.mark.faults, pytest.mark.lab]

BACKUP = [
    Phase("lock", "== back up production", "dumping database"),
    Phase("dump", "dumping database", "database dump:"),
    Phase("scan", "database dump:", "files: "),
    Phase("upload", "files: ", "saving snapshot"),
    Phase("commit", "saving snapshot", "new object(s)"),
]


@pytest.fixture(scope="module")
def bsite(mariadb_server: MariaDB, s3_server: S3Server) -> Iterator[BackupSite]:
    with backup_site(mariadb_server, s3_server) as s:
        yield s


@pytest.fixture
def earlier(bsite: BackupSite, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The snapshots before the test's fault (one at least)."""
    ids = bsite.snapshots(capsys)
    return ids or [bsite.backup(capsys)]


def _new_data(bsite: BackupSite, name: str, large: int = 0) -> None:
    """Something for the next backup to upload: small files and, with ``large``, a
    file of that size."""
    uploads = bsite.site.uploads / "faults" / name
    uploads.mkdir(parents=True)
    if large:
        (uploads / "large.bin").write_bytes(os.urandom(large))
    for i in range(20):
        (uploads / f"small-{i}.txt").write_bytes(os.urandom(500))
    bsite.site.chown()


def _after(bsite: BackupSite, capsys: pytest.CaptureFixture[str], earlier: list[str],
           *, may_exist: bool = False) -> None:
    """No snapshot lost or half-written; the next plain backup works."""
    now = bsite.snapshots(capsys)
    assert now[:len(earlier)] == earlier, (earlier, now)
    killed = now[len(earlier):]
    assert len(killed) <= (1 if may_exist else 0), now
    bsite.verify(earlier + killed)  # a snapshot that exists is whole
    bsite.verify([bsite.backup(capsys)])


@pytest.mark.parametrize("phase", BACKUP, ids=str)
def test_kill_9_during_backup(bsite: BackupSite, earlier: list[str], phase: Phase,
                              capsys: pytest.CaptureFixture[str]) -> None:
    _new_data(bsite, phase.name, large=(16 << 20) * (phase.name == "upload"))
    run = bsite.spawn("backup", "production", read=False)
    run.wait_for(phase.starts)
    if phase.name == "upload":
        # Mid-upload: some of the 16 MiB went to S3 (through the proxy that counts).
        sent = bsite.s3_proxy.stats().bytes_up
        deadline = time.monotonic() + 60
        while bsite.s3_proxy.stats().bytes_up < sent + (4 << 20):
            assert run.running() and time.monotonic() < deadline, run.output
            time.sleep(0.002)
    run.kill()
    assert phase.then not in run.output, f"killed too late, after {phase}:\n{run.output}"
    _after(bsite, capsys, earlier, may_exist=phase.name == "commit")


def test_s3_failing_parts(bsite: BackupSite, earlier: list[str],
                          capsys: pytest.CaptureFixture[str]) -> None:
    _new_data(bsite, "s3", large=7 << 20)
    bsite.s3_proxy.set(drop_after_bytes=1_000_000)  # every connection, retries too
    try:
        assert bsite.site.run("backup", "production", read=False, capsys=capsys) == 1
    finally:
        bsite.s3_proxy.clear()
    assert bsite.s3_proxy.stats().dropped >= 2
    assert "Traceback" not in bsite.site.last_err
    assert bsite.open_uploads() == [], "the failed backup left a multipart upload open"
    _after(bsite, capsys, earlier)


def test_kill_9_at_random_moments(bsite: BackupSite, rng: random.Random,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Kills at moments drawn from the measured length of a normal backup."""
    _new_data(bsite, "measured", large=4 << 20)
    started = time.monotonic()
    bsite.backup(capsys)
    took = time.monotonic() - started
    for i in range(2):
        earlier = bsite.snapshots(capsys)
        _new_data(bsite, f"random-{i}", large=4 << 20)
        run = bsite.spawn("backup", "production", read=False)
        time.sleep(max(0.0, rng.uniform(0, took) - (time.monotonic() - run.started)))
        run.kill()
        print(f"backup killed at {run.killed_at:.3f}s of {took:.3f}s")
        _after(bsite, capsys, earlier, may_exist=True)
