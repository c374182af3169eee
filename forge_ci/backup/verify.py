"""Verify a snapshot: download every object it references, authenticate it end to end
(age chunks and final flag, zstd frames), and compare every file's and the dump's
SHA-256 and size with the manifest (and the dump's trailer). The manifest itself must
be trusted first (signed by a pinned signer, see :mod:`forge_ci.backup.signing`).
Nothing is written but, on success, the marker ``verified/<site>/<environment>/<id>``
that prune relies on to keep the newest verified snapshot - bound to the SHA-256 of
the manifest's plaintext, so it proves itself. A verify that fails (the manifest is
untrusted or unreadable, or any object is damaged or missing) deletes the marker.

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
from forge_ci.backup.objects import checked, unseal
from forge_ci.backup.pack import read_members
from forge_ci.backup.repo import Repository, SnapshotRef
from forge_ci.backup.snapshot import Manifest
from forge_ci.errors import BackupError, StoreError
from forge_ci.progress import MakeProgress, silent
from forge_ci.units import human_size


@dataclass(frozen=True)
class Unit:
    """Content to check: the concatenated plaintext of ``keys`` - or, with an
    ``offset``, ``size`` bytes of the one object's plaintext from there (packed)."""

    what: str
    keys: tuple[str, ...]
    sha256: str
    size: int
    dump: bool = False
    offset: int | None = None


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


def units(manifest: Manifest) -> list[list[Unit]]:
    """What to check, grouped by what is read in one pass: an object stored alone
    (or a list of them), or a pack with every member this snapshot uses."""
    groups: dict[tuple[str, ...], list[Unit]] = {}
    if manifest.database is not None:
        db = manifest.database
        groups[(db.object,)] = [Unit(f"database dump {db.name}", (db.object,), db.sha256,
                                     db.size, dump=True)]
    seen: set[tuple[tuple[str, ...], int | None, int]] = set()
    for f in manifest.files:
        if f.type != "file" or not f.objects:
            continue
        assert f.sha256 is not None
        ident = (tuple(f.objects), f.offset, f.size)
        if ident in seen:
            continue
        seen.add(ident)
        key = tuple(f.objects) if f.offset is None else ("pack", f.objects[0])
        groups.setdefault(key, []).append(
            Unit(f"file {f.path!r}", f.objects, f.sha256, f.size, offset=f.offset))
    return list(groups.values())


def verify_snapshot(repo: Repository, ref: SnapshotRef, *, workers: int = 4,
                    log: Callable[[str], None] = lambda _m: None,
                    record: bool = True, show: MakeProgress = silent) -> VerifyReport:
    """Check everything; raise :class:`BackupFormatError` listing the problems.

    ``show`` reports the files and bytes checked so far (gha.Runner.progress)."""
    started = time.monotonic()
    try:
        loaded = repo.open_manifest(ref)
    except BackupError:
        if record:
            repo.clear_verified(ref)
        raise
    manifest = loaded.manifest
    todo = units(manifest)
    report = VerifyReport(ref.id)
    total = sum(u.size for group in todo for u in group)
    log(f"verifying {ref.id}: {len(todo)} objects, {human_size(total)}")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-verify") as pool, \
            show("verifying", files=sum(len(g) for g in todo), nbytes=total) as meter:
        for group, result in zip(todo, pool.map(lambda g: _check_group(repo, g), todo),
                                 strict=True):
            meter.advance(len(group), sum(u.size for u in group))
            stored, problems = result
            report.objects += len(group[0].keys)
            report.stored_bytes += stored
            for unit, problem in zip(group, problems, strict=True):
                if problem:
                    report.problems.append(f"{unit.what} ({', '.join(unit.keys)}): {problem}")
                else:
                    report.plain_bytes += unit.size
    report.seconds = round(time.monotonic() - started, 3)
    if report.problems:
        if record:
            repo.clear_verified(ref)
        shown = "\n  ".join(report.problems[:20])
        raise BackupFormatError(
            f"snapshot {ref.id} failed verification: {len(report.problems)} problem(s)\n  "
            f"{shown}",
            hint="restore from another snapshot (forge-ci snapshots lists them). Objects "
                 "are named by content: delete a damaged data/ object and the next backup "
                 "uploads that content again for new snapshots")
    if record:
        repo.mark_verified(loaded, {"objects": report.objects, "bytes": report.plain_bytes})
    return report


def _check_group(repo: Repository, group: list[Unit]) -> tuple[int, list[str | None]]:
    if group[0].offset is None:
        stored, problem = _check(repo, group[0])
        return stored, [problem]
    counter = _Count()
    ordered = sorted(range(len(group)), key=lambda i: (group[i].offset, group[i].size))
    wanted = [(group[i].offset or 0, group[i].size) for i in ordered]
    problems: list[str | None] = [None] * len(group)
    try:
        members = read_members(_plain(repo, group[0].keys, counter), wanted, drain=True)
        for i, data in zip(ordered, members, strict=False):
            unit = group[i]
            try:
                for _ in checked([data], sha256=unit.sha256, size=unit.size, what=unit.what):
                    pass
            except BackupError as e:
                problems[i] = e.message
        for _ in members:  # the end of the pack: authenticates its final chunk
            pass
    except (BackupError, StoreError) as e:
        # The pack itself is damaged or missing: every file in it is in doubt.
        problems = [e.message] * len(group)
    return counter.n, problems


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
