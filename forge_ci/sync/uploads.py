"""Uploads: only the files that changed travel, into TO's ``shared/`` uploads.

Both sides are listed (``find`` on each host, or FROM's snapshot manifest). A regular
file of FROM travels when TO has no regular file at the same path with the same size
and modification time (nanoseconds), as ``rsync`` decides by default; it lands with
FROM's mode and mtime, so the next sync finds it unchanged. Nothing is deleted in TO
(a file only TO has stays) and only ``<path>/shared/<sync.uploads>`` is written, never
a release. Symlinks are not synced.

From a live FROM the changed files stream as one ``tar`` of exactly those files out of
FROM's host (:func:`forge_ci.backup.tarstream.read_files`) into ``tar --extract`` on
TO's host (:func:`forge_ci.backup.tarstream.write_tree`): no file is whole in memory or
on the runner's disk. From a snapshot each file's bytes are read from the backup
repository and checked against the manifest's SHA-256 as they pass.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from forge_ci._malloc import READ_SIZE
from forge_ci.backup.objects import checked
from forge_ci.backup.pack import read_members
from forge_ci.backup.repo import Repository
from forge_ci.backup.scan import list_tree
from forge_ci.backup.snapshot import Manifest
from forge_ci.backup.tarstream import Readable, read_files, tar_info, write_tree
from forge_ci.errors import SyncError
from forge_ci.remote import Host


@dataclass(frozen=True)
class File:
    path: str  # relative to the environment's root: shared/web/app/uploads/…
    size: int
    mtime_ns: int
    mode: int


@dataclass(frozen=True)
class UploadPlan:
    folder: str  # shared/<uploads>
    files: tuple[File, ...]  # everything FROM has
    changed: tuple[File, ...]  # what travels

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.changed)

    def as_dict(self) -> dict[str, object]:
        return {"folder": self.folder, "files": len(self.files), "changed": len(self.changed),
                "bytes": self.bytes}


def folder(uploads: str) -> str:
    return posixpath.join("shared", uploads)


def live_files(host: Host, root: str, rel: str) -> list[File]:
    return [File(s.path, s.size, s.mtime_ns, s.mode)
            for s in list_tree(host, root, [rel], allow_missing=True) if s.kind == "file"]


def snapshot_files(manifest: Manifest, rel: str) -> list[File]:
    prefix = rel.rstrip("/") + "/"
    return [File(f.path, f.size, f.mtime_ns, f.mode) for f in manifest.files
            if f.type == "file" and f.path.startswith(prefix)]


def plan(source: list[File], host: Host, root: str, rel: str) -> UploadPlan:
    """Compare FROM's files with TO's (listed on its host) by size and mtime."""
    target = {s.path: (s.size, s.mtime_ns) for s in list_tree(host, root, [rel],
                                                             allow_missing=True)
              if s.kind == "file"}
    changed = tuple(f for f in source if target.get(f.path) != (f.size, f.mtime_ns))
    return UploadPlan(rel, tuple(source), changed)


def _info(f: File) -> tarfile.TarInfo:
    return tar_info(f.path, "file", f.mode, f.mtime_ns, size=f.size)


def _drain(reader: Readable) -> Iterator[bytes]:
    while chunk := reader.read(READ_SIZE):
        yield chunk


def copy_live(plan: UploadPlan, src: Host, src_root: str, dst: Host, dst_root: str) -> None:
    """Stream the changed files from FROM's host into TO's."""
    if not plan.changed:
        return
    by_path = {f.path: f for f in plan.changed}
    readers: dict[str, Readable] = {}

    with read_files(src, src_root, list(by_path)) as members:
        def entries() -> Iterator[tarfile.TarInfo]:
            for name, reader in members:
                f = by_path.get(name)
                if f is None or reader is None:
                    continue  # vanished or no longer a file: the next sync sees it
                readers[name] = reader
                yield _info(f)

        def content(info: tarfile.TarInfo) -> Iterable[bytes]:
            return _drain(readers.pop(info.name))

        write_tree(dst, dst_root, entries(), content)


def copy_snapshot(plan: UploadPlan, manifest: Manifest, repo: Repository, dst: Host,
                  dst_root: str) -> None:
    """Write the changed files out of FROM's snapshot into TO's host, each checked."""
    if not plan.changed:
        return
    entries = {f.path: f for f in manifest.files}
    wanted = sorted((entries[f.path] for f in plan.changed),
                    key=lambda e: (e.objects[0] if e.objects else "", e.offset or 0))
    packs: dict[str, dict[tuple[int, int], bytes]] = {}

    def content(info: tarfile.TarInfo) -> Iterable[bytes]:
        e = entries[info.name]
        if e.sha256 is None:
            raise SyncError(f"snapshot entry {e.path!r} has no SHA-256")
        if e.offset is None:
            chunks: Iterable[bytes] = (c for key in e.objects for c in repo.open(key))
        else:
            key = e.objects[0]
            if key not in packs:
                packs.clear()  # one pack in memory at a time (they are read in order)
                spans = sorted({(x.offset or 0, x.size) for x in wanted
                                if x.objects and x.objects[0] == key and x.offset is not None})
                packs[key] = dict(zip(spans, read_members(repo.open(key), spans, drain=True),
                                      strict=True))
            chunks = [packs[key][(e.offset, e.size)]]
        return checked(chunks, sha256=e.sha256, size=e.size, what=f"file {e.path!r}")

    by_path = {f.path: f for f in plan.changed}
    write_tree(dst, dst_root, (_info(by_path[e.path]) for e in wanted), content)
