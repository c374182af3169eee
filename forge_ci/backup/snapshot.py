"""The snapshot manifest: what a snapshot holds, and the checks that make it safe to restore.

A manifest is JSON (UTF-8, keys sorted), stored like every object as age(zstd(json))
under ``snapshots/<site>/<environment>/<id>``; it is written last, so a snapshot
without one does not exist. Example::

    {"format": "forge-ci snapshot", "version": 1,
     "id": "20240115T031502Z-3f9a1c2b", "time": "2024-01-15T03:15:02.123456+00:00",
     "site": "example-site", "environment": "production", "hostnames": ["deploy@203.0.113.10:22"],
     "tool": "forge-ci 0.1.0", "paths": ["shared/web/app/uploads"],
     "files": [
       {"path": "shared/web/app/uploads", "type": "dir", "mode": 493,
        "mtime_ns": 1705287302000000000},
       {"path": "shared/web/app/uploads/a b.jpg", "type": "file", "mode": 420,
        "mtime_ns": 1705287302123456789, "size": 51234, "sha256": "<64 hex>",
        "objects": ["data/3f/3f...<64 hex>"], "offset": 1048576},
       {"path": "shared/web/app/uploads/latest", "type": "symlink", "mode": 511,
        "mtime_ns": 1705287302000000000, "target": "2024/01"}],
     "database": {"name": "example", "object": "data/9c/9c...", "size": 1048576,
                  "sha256": "<64 hex>", "tool": "mariadb-dump", "trailer": "-- Dump completed"},
     "stats": {"files": 1, "bytes": 51234, "new_objects": 2, "new_bytes": 40000, "seconds": 3.2}}

A file's content is the concatenation of the plaintexts of its ``objects`` in order
(zero objects for an empty file, else exactly one) - unless the entry has an
``offset``: then it is ``size`` bytes of its one object's plaintext from ``offset``
on (a small file packed with others; at most ``PACKED_MAX`` bytes). Paths are relative to the
environment's ``path``. Names that are not UTF-8 are kept as JSON ``\\udcXX`` escapes.

:func:`parse` refuses hostile manifests before anything is written: absolute paths,
``..`` or unnormalised paths, paths outside the snapshot's ``paths``, duplicates,
entries below a symlink, and symlinks whose target leaves the snapshot's ``paths``
(a link in uploads to ``current/.env`` would publish the site's secrets) or passes
through another symlink. A backup leaves such links out (:func:`refused_links`).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.layout import is_data_key, is_snapshot_id

FORMAT = "forge-ci snapshot"
VERSION = 1
PACKED_MAX = 16 * 1024 * 1024  # a packed file is read whole into memory on restore
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

FileType = Literal["file", "dir", "symlink"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    type: FileType
    mode: int
    mtime_ns: int
    size: int = 0
    sha256: str | None = None
    objects: tuple[str, ...] = ()
    target: str | None = None
    offset: int | None = None  # set: packed, ``size`` bytes of ``objects[0]`` from here


@dataclass(frozen=True)
class DatabaseEntry:
    name: str
    object: str
    size: int
    sha256: str
    tool: str
    trailer: str


@dataclass(frozen=True)
class Manifest:
    id: str
    time: datetime
    site: str
    environment: str
    hostnames: tuple[str, ...]
    tool: str
    paths: tuple[str, ...]
    files: tuple[FileEntry, ...] = ()
    database: DatabaseEntry | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def objects(self) -> set[str]:
        """Every data object this snapshot needs."""
        keys = {k for f in self.files for k in f.objects}
        if self.database is not None:
            keys.add(self.database.object)
        return keys

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files) + (self.database.size if self.database else 0)


def dumps(manifest: Manifest) -> bytes:
    """Serialise; :func:`parse` of the result gives ``manifest`` back."""
    return b"".join(dump_chunks(manifest))


def dump_chunks(manifest: Manifest, *, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """:func:`dumps` as pieces of about ``chunk`` bytes, one entry serialised at a
    time: the same bytes, without the whole document (as dicts, then as text) in
    memory at once. Deterministic, so it can be run twice (hash, then store)."""
    doc = {
        "format": FORMAT, "version": VERSION, "id": manifest.id,
        "time": manifest.time.isoformat(), "site": manifest.site,
        "environment": manifest.environment, "hostnames": list(manifest.hostnames),
        "tool": manifest.tool, "paths": list(manifest.paths),
        "database": asdict(manifest.database) if manifest.database else None,
        "stats": manifest.stats,
    }
    # Keys sorted, as json.dumps(sort_keys=True) of the whole would put them: the
    # ones before "files", the entries one by one, then the ones after.
    head = _json({k: v for k, v in doc.items() if k < "files"})
    tail = _json({k: v for k, v in doc.items() if k > "files"})
    buf = [head[:-1] + ',"files":[']
    size = len(buf[0])
    for i, f in enumerate(manifest.files):
        text = ("," if i else "") + _json(_file_item(f))
        buf.append(text)
        size += len(text)
        if size >= chunk:
            yield "".join(buf).encode("ascii")
            buf, size = [], 0
    buf.append("]," + tail[1:])
    yield "".join(buf).encode("ascii")


def _json(value: object) -> str:
    # ensure_ascii: non-UTF-8 names (lone surrogates) survive as \udcXX escapes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _file_item(f: FileEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"path": f.path, "type": f.type, "mode": f.mode,
                            "mtime_ns": f.mtime_ns}
    if f.type == "file":
        item |= {"size": f.size, "sha256": f.sha256, "objects": list(f.objects)}
        if f.offset is not None:
            item["offset"] = f.offset
    elif f.type == "symlink":
        item["target"] = f.target
    return item


def parse(data: bytes, *, expect_id: str | None = None) -> Manifest:
    """Parse and validate a manifest; raise :class:`BackupFormatError` if it is
    malformed or hostile (see the module docstring)."""
    try:
        # Bytes straight to json (no second, decoded copy of the whole text), still
        # UTF-8 only: json would also take UTF-16/32 or a BOM, which no manifest is.
        if data.startswith(codecs.BOM_UTF8) or b"\0" in data[:4]:
            raise ValueError("not UTF-8 JSON")
        manifest = _walk(data.decode("utf-8", "surrogatepass"))
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise BackupFormatError(f"invalid snapshot manifest: {e}") from None
    if expect_id is not None and manifest.id != expect_id:
        raise BackupFormatError(f"manifest stored as {expect_id} says it is {manifest.id}")
    check_tree(manifest)
    return manifest


_DECODE = json.JSONDecoder().raw_decode
_SPACE = re.compile(r"[ \t\n\r]*")


def _walk(text: str) -> Manifest:
    """The document as :func:`json.loads` reads it, but walked one top-level key at
    a time and each file entry converted as soon as it is decoded: the whole tree of
    dicts (about 700 bytes per file) is never built."""

    def skip(pos: int) -> int:
        m = _SPACE.match(text, pos)
        return m.end() if m else pos

    doc: dict[str, Any] = {}
    files: tuple[FileEntry, ...] | None = None
    pos = skip(0)
    if text[pos] != "{":
        raise ValueError("not an object")
    pos = skip(pos + 1)
    if text[pos] == "}":
        pos += 1
    else:
        while True:
            key, pos = _DECODE(text, pos)
            pos = skip(pos)
            if not isinstance(key, str) or text[pos] != ":":
                raise ValueError("malformed JSON object")
            pos = skip(pos + 1)
            if key == "files":
                files, pos = _file_list(text, pos, skip)
            else:
                doc[key], pos = _DECODE(text, pos)
            pos = skip(pos)
            if text[pos] == "}":
                pos += 1
                break
            if text[pos] != ",":
                raise ValueError("malformed JSON object")
            pos = skip(pos + 1)
    if skip(pos) != len(text):
        raise ValueError("extra data after the manifest")
    if files is None:
        raise KeyError("files")
    return _build(doc, files)


def _file_list(text: str, pos: int, skip: Any) -> tuple[tuple[FileEntry, ...], int]:
    if text[pos] != "[":
        raise TypeError("files is not a list")
    out: list[FileEntry] = []
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # a pack's key, held once
    pos = skip(pos + 1)
    if text[pos] == "]":
        return (), pos + 1
    while True:
        item, pos = _DECODE(text, pos)
        if not isinstance(item, dict):
            raise TypeError("a file entry is not an object")
        entry = _file(item)
        if entry.objects:
            objects = shared.setdefault(entry.objects, entry.objects)
            if objects is not entry.objects:
                entry = dataclasses.replace(entry, objects=objects)
        out.append(entry)
        pos = skip(pos)
        if text[pos] == "]":
            return tuple(out), pos + 1
        if text[pos] != ",":
            raise ValueError("malformed files list")
        pos = skip(pos + 1)


def _build(doc: dict[str, Any], files: tuple[FileEntry, ...]) -> Manifest:
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} version {VERSION}")
    time = datetime.fromisoformat(_str(doc["time"]))
    if time.tzinfo is None:
        raise ValueError("time has no time zone")
    if not is_snapshot_id(_str(doc["id"])):
        raise ValueError("bad id")
    for key in ("site", "environment"):
        if not _NAME.match(_str(doc[key])):
            raise ValueError(f"bad {key}")
    db = doc.get("database")
    return Manifest(
        id=doc["id"], time=time, site=doc["site"], environment=doc["environment"],
        hostnames=tuple(_str(h) for h in doc["hostnames"]), tool=_str(doc["tool"]),
        paths=tuple(_str(p) for p in doc["paths"]),
        files=files,
        database=_database(db) if db is not None else None,
        stats={str(k): float(v) for k, v in dict(doc.get("stats") or {}).items()},
    )


def _file(item: dict[str, Any]) -> FileEntry:
    kind = item["type"]
    mode, mtime = _int(item["mode"]), _int(item["mtime_ns"])
    if not 0 <= mode <= 0o7777:
        raise ValueError("bad mode")
    path = _str(item["path"])
    if kind == "file":
        size, sha, objects = _int(item["size"]), _str(item["sha256"]), item["objects"]
        if size < 0 or not _HEX64.match(sha) or not isinstance(objects, list):
            raise ValueError(f"bad file entry {path!r}")
        if not all(isinstance(o, str) and is_data_key(o) for o in objects):
            raise ValueError(f"bad object key in {path!r}")
        if bool(objects) != (size > 0):
            raise ValueError(f"{path!r}: objects do not match its size")
        offset = item.get("offset")
        if offset is not None and (_int(offset) < 0 or len(objects) != 1
                                   or size > PACKED_MAX):
            raise ValueError(f"{path!r}: bad packed entry")
        return FileEntry(path, "file", mode, mtime, size, sha, tuple(objects), offset=offset)
    if kind == "dir":
        return FileEntry(path, "dir", mode, mtime)
    if kind == "symlink":
        return FileEntry(path, "symlink", mode, mtime, target=_str(item["target"]))
    raise ValueError(f"unknown entry type {kind!r}")


def _database(item: dict[str, Any]) -> DatabaseEntry:
    entry = DatabaseEntry(name=_str(item["name"]), object=_str(item["object"]),
                          size=_int(item["size"]), sha256=_str(item["sha256"]),
                          tool=_str(item["tool"]), trailer=_str(item["trailer"]))
    if not is_data_key(entry.object) or not _HEX64.match(entry.sha256) or entry.size <= 0:
        raise ValueError("bad database entry")
    return entry


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


# --- hostile paths ------------------------------------------------------------------


def safe_relative(path: str) -> bool:
    """A clean relative path: no absolute, no ``..``/``.``/empty parts, no NUL."""
    if not path or path.startswith("/") or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def check_tree(manifest: Manifest) -> None:
    """Refuse entries that could write outside the restore root when extracted."""
    roots = manifest.paths
    for root in roots:
        if not safe_relative(root):
            raise BackupFormatError(f"manifest {manifest.id}: hostile backup path {root!r}")
    seen: dict[str, FileEntry] = {}
    for entry in manifest.files:
        path = entry.path
        if not safe_relative(path):
            raise BackupFormatError(f"manifest {manifest.id}: hostile path {path!r}")
        if not any(path == r or path.startswith(r + "/") for r in roots):
            raise BackupFormatError(f"manifest {manifest.id}: {path!r} is outside its paths")
        if path in seen:
            raise BackupFormatError(f"manifest {manifest.id}: {path!r} is listed twice")
        seen[path] = entry
    for entry in manifest.files:
        _check_parents(manifest.id, entry.path, seen)
        if entry.type == "symlink":
            problem = _link_problem(entry, seen, roots)
            if problem:
                raise BackupFormatError(f"manifest {manifest.id}: symlink {entry.path!r} "
                                        f"{problem}")


def refused_links(entries: tuple[FileEntry, ...], roots: tuple[str, ...]) -> list[str]:
    """The symlinks among ``entries`` that :func:`check_tree` would refuse."""
    seen = {e.path: e for e in entries}
    return [e.path for e in entries if e.type == "symlink" and _link_problem(e, seen, roots)]


def _check_parents(sid: str, path: str, seen: dict[str, FileEntry]) -> None:
    parent = posixpath.dirname(path)
    while parent:
        above = seen.get(parent)
        if above is not None and above.type != "dir":
            raise BackupFormatError(
                f"manifest {sid}: {path!r} lies below {parent!r}, which is not a directory")
        parent = posixpath.dirname(parent)


def _link_problem(entry: FileEntry, seen: dict[str, FileEntry],
                  roots: tuple[str, ...]) -> str | None:
    """Resolve the target one component at a time: it must never climb above the
    environment's root, nor pass *through* another symlink of the snapshot (whose
    real location would make a lexical check meaningless), and it must end inside
    one of the snapshot's ``paths``."""
    target = entry.target or ""
    if not target or target.startswith("/") or "\0" in target:
        return "has a hostile target"
    stack = entry.path.split("/")[:-1]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if not stack:
                return "points outside the environment"
            stack.pop()
            continue
        stack.append(part)
        hop = seen.get("/".join(stack))
        if hop is not None and hop.type == "symlink" and i < len(parts) - 1:
            return "resolves through another symlink"
    end = "/".join(stack)
    if not any(end == r or end.startswith(r + "/") for r in roots):
        return "points outside the snapshot's paths"
    return None
