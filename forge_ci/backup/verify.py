"""Verify a snapshot: download every object it references, authenticate it end to end
(age chunks and final flag, zstd frames), and compare every file's and the dump's
SHA-256 and size with the manifest (and the dump's trailer). Nothing is written but,
on success, the marker ``verified/<site>/<env>/<id>`` that prune relies on to keep
the newest verified snapshot.

All problems are collected (not just the first), so one run lists every damaged
object. Objects shared by several files are checked once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from forge_ci.backup.dump import has_trailer
from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.manifest import Manifest
from forge_ci.backup.objects import checked, unseal
from forge_ci.backup.repo import Repository, SnapshotRef
from forge_ci.errors import BackupError, StoreError


@dataclass(frozen=True)
class Unit:
    """Content to check: the concatenated plaintext of ``keys``."""

    what: str
    keys: tuple[str, ...]
    sha256: str
    size: int
    dump: bool = False


@dataclass
class VerifyReport:
    snapshot_id: str
    objects: int = 0
    plain_bytes: int = 0
    stored_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok}


def units(manifest: Manifest) -> list[Unit]:
    seen: dict[tuple[str, ...], Unit] = {}
    if manifest.database is not None:
        db = manifest.database
        seen[(db.object,)] = Unit(f"database dump {db.name}", (db.object,), db.sha256,
                                  db.size, dump=True)
    for f in manifest.files:
        if f.type == "file" and f.objects and tuple(f.objects) not in seen:
            assert f.sha256 is not None
            seen[tuple(f.objects)] = Unit(f"file {f.path!r}", f.objects, f.sha256, f.size)
    return list(seen.values())


def verify_snapshot(repo: Repository, ref: SnapshotRef, *, workers: int = 4,
                    log: Callable[[str], None] = lambda _m: None,
                    record: bool = True) -> VerifyReport:
    """Check everything; raise :class:`BackupFormatError` listing the problems."""
    started = time.monotonic()
    manifest = repo.load(ref)
    todo = units(manifest)
    report = VerifyReport(ref.id)
    log(f"verifying {ref.id}: {len(todo)} objects")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-verify") as pool:
        for unit, result in zip(todo, pool.map(lambda u: _check(repo, u), todo), strict=True):
            stored, problem = result
            report.objects += len(unit.keys)
            report.stored_bytes += stored
            if problem:
                report.problems.append(f"{unit.what} ({', '.join(unit.keys)}): {problem}")
            else:
                report.plain_bytes += unit.size
    report.seconds = round(time.monotonic() - started, 3)
    if report.problems:
        shown = "\n  ".join(report.problems[:20])
        raise BackupFormatError(
            f"snapshot {ref.id} failed verification: {len(report.problems)} problem(s)\n  "
            f"{shown}",
            hint="restore from another snapshot (forge-ci snapshots lists them). Objects "
                 "are named by content: delete a damaged data/ object and the next backup "
                 "uploads that content again for new snapshots")
    if record:
        repo.mark_verified(ref, {"objects": report.objects, "bytes": report.plain_bytes})
    return report


def _check(repo: Repository, unit: Unit) -> tuple[int, str | None]:
    counter = _Count()
    try:
        tail = b""
        for chunk in checked(_plain(repo, unit.keys, counter), sha256=unit.sha256,
                             size=unit.size, what=unit.what):
            if unit.dump:
                tail = (tail + chunk)[-512:]
        if unit.dump and not has_trailer(tail):
            return counter.n, "the dump has no '-- Dump completed' trailer"
    except (BackupError, StoreError) as e:
        return counter.n, e.message
    return counter.n, None


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.n += len(chunk)
            yield chunk


def _plain(repo: Repository, keys: tuple[str, ...], counter: _Count) -> Iterator[bytes]:
    for key in keys:
        yield from unseal(counter.tee(repo.store.get(key)), repo.identities)
