"""Take a snapshot: database dump, then files, then - last - the manifest.

Order matters. The dump comes first: its transaction is the snapshot's point in
time. Data objects go up next, each one complete or not at all. The manifest is
written only when every object it names is stored (its signature just before it,
when a signing key is at hand); a run that fails anywhere
before that leaves no snapshot (just unreferenced objects, which the next prune
removes) and its shared lock keeps a concurrent prune from deleting objects this
run is about to reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from forge_ci import __version__
from forge_ci._malloc import release_freed_heap
from forge_ci.backup import files, layout
from forge_ci.backup import index as index_store
from forge_ci.backup.dump import dump_database
from forge_ci.backup.pack import PackWriter
from forge_ci.backup.repo import Repository
from forge_ci.backup.scan import HashCache
from forge_ci.backup.snapshot import DatabaseEntry, Manifest, refused_links
from forge_ci.backup.store_lock import StoreLock
from forge_ci.backup.uploader import Uploader
from forge_ci.config.backup import BackupConfig
from forge_ci.errors import ForgeError
from forge_ci.progress import MakeProgress, silent
from forge_ci.remote import Host
from forge_ci.units import human_size

Log = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """Where a snapshot's data lives: one host, the environment's root on it."""

    host: Host
    root: str
    site: str
    environment: str
    hostnames: tuple[str, ...]


@dataclass
class BackupReport:
    snapshot_id: str | None
    dry_run: bool
    files: int = 0
    file_bytes: int = 0
    database_bytes: int = 0
    upload_files: int = 0  # files whose content the store lacked (planned)
    upload_bytes: int = 0
    new_objects: int = 0  # objects actually stored by this run
    new_stored_bytes: int = 0  # their encrypted, compressed size
    hashed: int = 0
    located: int = 0  # unchanged files whose stored place came from the hash cache
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # dump_s, files_s: seconds

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def take_snapshot(repo: Repository, source: Source, cfg: BackupConfig, *,
                  dry_run: bool = False, log: Log = lambda _m: None,
                  now: Callable[[], datetime] = lambda: datetime.now(UTC),
                  workers: int = 8, show: MakeProgress = silent) -> BackupReport:
    """Back up ``source`` into ``repo``; with ``dry_run`` only plan (reads only).

    ``show`` reports hashing and uploading as they go (gha.Runner.progress)."""
    started = time.monotonic()
    repo.check_signing()  # before any work: a snapshot nobody trusts is no backup
    host, root = source.host, source.root
    key = repo.naming_key()
    if dry_run:
        index = index_store.load(repo, repo.data_keys())
        plan = files.plan(host, root, cfg.paths, key, index, HashCache.load(host, root, key),
                          show=show)
        return _report(None, True, plan, None, started)
    with StoreLock(repo.store, "shared", repo.recipients,
                   who=f"backup of {source.site}/{source.environment}"):
        index = index_store.load(repo, repo.data_keys())
        snapshot_time = now()
        sid = layout.new_snapshot_id(snapshot_time, taken=[r.id for r in repo.refs()])
        db: DatabaseEntry | None = None
        db_stored = 0
        phases: dict[str, float] = {}
        with Uploader(repo, workers=workers) as uploader:
            if cfg.database is not None:
                log(f"dumping database {cfg.database.name} on {host.name}")
                dumping = time.monotonic()
                db, db_stored = dump_database(host, cfg.database, repo,
                                              layout.random_data_key())
                phases["dump_s"] = round(time.monotonic() - dumping, 3)
                log(f"database dump: {human_size(db.size)} ({db.tool})")
            scanning = time.monotonic()
            plan = files.plan(host, root, cfg.paths, key, index, HashCache.load(host, root, key),
                              show=show)
            log(f"files: {plan.file_count()}, to upload: {len(plan.upload)} "
                f"({human_size(plan.upload_bytes())}), hashed on the host: {plan.hashed}")
            packer = PackWriter(uploader, repo.recipients)
            files.upload(host, root, plan, key, index, uploader, packer, progress=log,
                         show=show)
        phases["files_s"] = round(time.monotonic() - scanning, 3)
        release_freed_heap()  # the upload's buffers (sealed chunks) held nothing now
        # The index next, so the next backup finds these packs; then the manifest.
        log(f"saving snapshot {sid}")
        index_store.save(repo, index, packer.written, packer.files)
        report = _report(sid, False, plan, db, started)
        report.new_objects = uploader.objects + (1 if db else 0)
        report.new_stored_bytes = uploader.stored_bytes + db_stored
        report.phases = phases
        # The manifest's entries are made from the plan's columns as it is written.
        plan.upload, plan.unhashed = files.row_array(), files.row_array()
        refused = sorted(set(refused_links(plan.links(), cfg.paths)))
        for path in refused:
            log(f"warning: not backing up symlink {path!r}: it points outside the backup "
                "paths, and a restore would refuse it")
        report.skipped += refused
        manifest = Manifest(
            id=sid, time=snapshot_time, site=source.site, environment=source.environment,
            hostnames=source.hostnames, tool=f"forge-ci {__version__}", paths=cfg.paths,
            files=plan.entries(index, leave_out=refused), database=db,
            stats={"files": report.files, "bytes": report.file_bytes + report.database_bytes,
                   "new_objects": report.new_objects, "new_bytes": report.new_stored_bytes,
                   "database_bytes": report.database_bytes, **phases,
                   "seconds": round(time.monotonic() - started, 3)})
        del packer
        repo.save(manifest)  # the snapshot exists from here on
        del manifest
        release_freed_heap()  # the sealed manifest, held whole for its PUT
    _save_cache(host, root, plan, index, key, log)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _report(sid: str | None, dry_run: bool, plan: files.FilePlan, db: DatabaseEntry | None,
            started: float) -> BackupReport:
    return BackupReport(
        snapshot_id=sid, dry_run=dry_run, files=plan.file_count(),
        file_bytes=plan.file_bytes(), database_bytes=db.size if db else 0,
        upload_files=len(plan.upload), upload_bytes=plan.upload_bytes(), hashed=plan.hashed,
        located=plan.located,
        skipped=list(plan.skipped),
        seconds=round(time.monotonic() - started, 3))


def _save_cache(host: Host, root: str, plan: files.FilePlan, index: index_store.BlobIndex,
                naming_key: bytes, log: Log) -> None:
    try:
        HashCache.write(host, root, files.cache_records(plan, index), naming_key)
    except ForgeError as e:
        log(f"warning: could not save the hash cache on {host.name}: {e.message}")
