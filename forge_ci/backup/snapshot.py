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
import json
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, overload

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


_KINDS: tuple[FileType, FileType, FileType] = ("file", "dir", "symlink")
_KIND_CODE = {kind: i for i, kind in enumerate(_KINDS)}
_NO_SHA = bytes(32)


class EntryView(Sequence[FileEntry]):
    """Entries held as something smaller than :class:`FileEntry` objects, each made
    when it is read (:meth:`_make`, index ``0 <= i < len``)."""

    def _make(self, i: int) -> FileEntry:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> FileEntry: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[FileEntry]: ...

    def __getitem__(self, i: int | slice) -> FileEntry | Sequence[FileEntry]:
        if isinstance(i, slice):
            return tuple(self._make(j) for j in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("entry index out of range")
        return self._make(i)

    def __iter__(self) -> Iterator[FileEntry]:
        return (self._make(i) for i in range(len(self)))


class FileTable(EntryView):
    """A parsed manifest's entries as columns: about 140 bytes a file (the path as
    UTF-8, the SHA-256 as 32 bytes, the numbers in arrays, a pack's keys held once)
    instead of about 420 as :class:`FileEntry` objects - 14 MiB less at 50,000 files,
    which a restore would otherwise hold from start to end. An entry is made when it
    is asked for; :meth:`path`, :meth:`kind`, :meth:`size` and :meth:`first_object`
    read one column without making it."""

    def __init__(self) -> None:
        self._paths = bytearray()
        self._ends = array("q")
        self._kinds = bytearray()
        self._modes = array("H")
        self._mtimes = array("q")
        self._sizes = array("q")
        self._offsets = array("q")  # -1: none
        self._shas = bytearray()  # 32 bytes each (zeros: none)
        self._keys = array("l")  # into _keysets
        self._keysets: list[tuple[str, ...]] = [()]
        self._keyset_of: dict[tuple[str, ...], int] | None = {(): 0}  # while built
        self._targets: dict[int, str] = {}

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> FileTable:
        if isinstance(entries, FileTable):
            return entries
        table = cls()
        for e in entries:
            table.append(e.path, e.type, e.mode, e.mtime_ns, e.size, e.sha256, e.objects,
                         e.target, e.offset)
        table.seal()
        return table

    def append(self, path: str, kind: FileType, mode: int, mtime_ns: int, size: int = 0,
               sha256: str | None = None, objects: tuple[str, ...] = (),
               target: str | None = None, offset: int | None = None) -> None:
        assert self._keyset_of is not None, "the table is sealed"
        if target is not None:
            self._targets[len(self._kinds)] = target
        self._paths += path.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._paths))
        self._kinds.append(_KIND_CODE[kind])
        self._modes.append(mode)
        self._mtimes.append(mtime_ns)
        self._sizes.append(size)
        self._offsets.append(-1 if offset is None else offset)
        self._shas += _NO_SHA if sha256 is None else bytes.fromhex(sha256)
        keyset = self._keyset_of.get(objects)
        if keyset is None:
            keyset = self._keyset_of[objects] = len(self._keysets)
            self._keysets.append(objects)
        self._keys.append(keyset)

    def holds(self, keys: tuple[str, ...]) -> bool:
        """``keys`` are some entry's already (checked then)."""
        return self._keyset_of is not None and keys in self._keyset_of

    def seal(self) -> None:
        """No more entries: drop the builder's index of key sets."""
        self._keyset_of = None

    def __len__(self) -> int:
        return len(self._kinds)

    def _make(self, i: int) -> FileEntry:
        kind = _KINDS[self._kinds[i]]
        offset = self._offsets[i]
        return FileEntry(
            self.path(i), kind, self._modes[i], self._mtimes[i], self._sizes[i],
            self._shas[32 * i:32 * i + 32].hex() if kind == "file" else None,
            self._keysets[self._keys[i]], self._targets.get(i),
            None if offset < 0 else offset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"FileTable({len(self)} entries)"

    def path(self, i: int) -> str:
        start = self._ends[i - 1] if i else 0
        return self._paths[start:self._ends[i]].decode("utf-8", "surrogatepass")

    def kind(self, i: int) -> FileType:
        return _KINDS[self._kinds[i]]

    def size(self, i: int) -> int:
        return self._sizes[i]

    def offset(self, i: int) -> int | None:
        offset = self._offsets[i]
        return None if offset < 0 else offset

    def object_keys(self) -> set[str]:
        """Every object some entry names (each key set was added for an entry)."""
        return {key for keys in self._keysets for key in keys}

    def total_size(self) -> int:
        return sum(self._sizes)

    def target(self, i: int) -> str | None:
        return self._targets.get(i)

    def first_object(self, i: int) -> str | None:
        keys = self._keysets[self._keys[i]]
        return keys[0] if keys else None


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
    files: Sequence[FileEntry] = ()  # a backup's are made as they are written
    database: DatabaseEntry | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def objects(self) -> set[str]:
        """Every data object this snapshot needs."""
        if isinstance(self.files, FileTable):
            keys = self.files.object_keys()
        else:
            keys = {k for f in self.files for k in f.objects}
        if self.database is not None:
            keys.add(self.database.object)
        return keys

    @property
    def total_bytes(self) -> int:
        files = self.files
        size = files.total_size() if isinstance(files, FileTable) else sum(f.size for f in files)
        return size + (self.database.size if self.database else 0)


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
    return parse_pieces(_slices(data, _WINDOW), expect_id=expect_id)


def parse_pieces(pieces: Iterable[bytes | memoryview], *,
                 expect_id: str | None = None) -> Manifest:
    """:func:`parse` of a manifest's text as it arrives: neither the whole text nor
    the tree of dicts is held at once. What ``pieces`` raises goes through as it is."""
    try:
        # Bytes straight to json, decoded a piece at a time (no second, decoded copy
        # of the whole text), still UTF-8 only: json would also take UTF-16/32 or a
        # BOM, which no manifest is.
        manifest = _walk(_Window(_utf8_only(iter(pieces))))
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError,
            OverflowError) as e:  # OverflowError: a number the table's columns cannot hold
        raise BackupFormatError(f"invalid snapshot manifest: {e}") from None
    if expect_id is not None and manifest.id != expect_id:
        raise BackupFormatError(f"manifest stored as {expect_id} says it is {manifest.id}")
    check_tree(manifest)
    return manifest


def _slices(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for at in range(0, len(view), size):
        yield view[at:at + size]


def _utf8_only(pieces: Iterator[bytes | memoryview]
               ) -> Iterator[bytes | memoryview]:
    """``pieces``, once their first four bytes show no BOM and no NUL (UTF-16/32)."""
    head = b""
    for piece in pieces:
        head += bytes(piece)
        if len(head) >= 4:
            break
    if head.startswith(codecs.BOM_UTF8) or b"\0" in head[:4]:
        raise ValueError("not UTF-8 JSON")
    if head:
        yield head
    yield from pieces


_DECODE = json.JSONDecoder().raw_decode
_LOADS = json.JSONDecoder().decode
_SPACE = re.compile(r"[ \t\n\r]*")
# Between two file entries, as :func:`dump_chunks` writes them. It cannot occur inside
# a JSON string (a quote there follows a backslash), so the ``}`` is structural.
_ENTRY_GAP = '},{"'
_WINDOW = 256 * 1024  # bytes decoded at a time


class _Window:
    """The UTF-8 text of ``pieces`` a piece at a time: :attr:`text` from :attr:`pos`
    is what is left to read; :meth:`more` appends the next piece (and drops what was
    read). Values are decoded by json's own decoder, only once complete."""

    def __init__(self, pieces: Iterator[bytes | memoryview]) -> None:
        self._pieces = pieces
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self.text, self.pos, self.eof = "", 0, False

    def more(self) -> bool:
        """False once every piece was read; True when one more was (maybe empty)."""
        if self.eof:
            return False
        chunk = next(self._pieces, None)
        self.eof = chunk is None
        self.text = self.text[self.pos:] + self._decoder.decode(chunk or b"", self.eof)
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space (consumed by the caller)."""
        while True:
            m = _SPACE.match(self.text, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                raise ValueError("the manifest ends early")

    def at_end(self) -> bool:
        while True:
            m = _SPACE.match(self.text, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.text):
                return False
            if not self.more():
                return True

    def value(self) -> Any:
        """The next JSON value; a value cut by the window's end is read again whole
        (one that ends exactly there might go on: a number)."""
        self.peek()
        while True:
            try:
                value, end = _DECODE(self.text, self.pos)
            except json.JSONDecodeError:
                if self.more():
                    continue
                raise
            if end < len(self.text) or not self.more():
                self.pos = end
                return value

    def entries(self) -> list[Any] | None:
        """The whole file entries the window holds from here, decoded at once (one
        call of json's decoder for many), or None: read the next one alone."""
        cut = self.text.rfind(_ENTRY_GAP, self.pos)
        if cut < 0 or self.text[self.pos] != "{":
            return None
        try:
            items = _LOADS(f"[{self.text[self.pos:cut + 1]}]")
        except json.JSONDecodeError:
            return None  # not the layout dump_chunks writes: one at a time
        self.pos = cut + 1
        return items if isinstance(items, list) else None


def _walk(text: _Window) -> Manifest:
    """The document as :func:`json.loads` reads it, but walked one top-level key at
    a time and the file entries converted as they are decoded: neither the whole
    text nor the tree of dicts (about 700 bytes per file) is held at once."""
    doc: dict[str, Any] = {}
    files: FileTable | None = None
    if text.peek() != "{":
        raise ValueError("not an object")
    text.pos += 1
    if text.peek() == "}":
        text.pos += 1
    else:
        while True:
            key = text.value()
            if not isinstance(key, str) or text.peek() != ":":
                raise ValueError("malformed JSON object")
            text.pos += 1
            text.peek()
            if key == "files":
                files = _file_list(text)
            else:
                doc[key] = text.value()
            c = text.peek()
            text.pos += 1
            if c == "}":
                break
            if c != ",":
                raise ValueError("malformed JSON object")
    if not text.at_end():
        raise ValueError("extra data after the manifest")
    if files is None:
        raise KeyError("files")
    return _build(doc, files)


def _file_list(text: _Window) -> FileTable:
    if text.peek() != "[":
        raise TypeError("files is not a list")
    text.pos += 1
    table = FileTable()
    if text.peek() == "]":
        text.pos += 1
        table.seal()
        return table
    while True:
        items = text.entries()
        for item in items if items is not None else [text.value()]:
            if not isinstance(item, dict):
                raise TypeError("a file entry is not an object")
            _add(table, item)
        c = text.peek()
        text.pos += 1
        if c == "]":
            table.seal()
            return table
        if c != ",":
            raise ValueError("malformed files list")
        text.peek()


def _build(doc: dict[str, Any], files: FileTable) -> Manifest:
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


def _add(table: FileTable, item: dict[str, Any]) -> None:
    kind = item["type"]
    mode, mtime = _int(item["mode"]), _int(item["mtime_ns"])
    if not 0 <= mode <= 0o7777:
        raise ValueError("bad mode")
    path = _str(item["path"])
    if kind == "file":
        size, sha, objects = _int(item["size"]), _str(item["sha256"]), item["objects"]
        if size < 0 or not _HEX64.match(sha) or not isinstance(objects, list):
            raise ValueError(f"bad file entry {path!r}")
        keys = tuple(objects) if all(type(o) is str for o in objects) else None
        # A pack's key is checked once, when the table first holds it.
        if keys is None or not (table.holds(keys) or all(is_data_key(o) for o in keys)):
            raise ValueError(f"bad object key in {path!r}")
        if bool(objects) != (size > 0):
            raise ValueError(f"{path!r}: objects do not match its size")
        offset = item.get("offset")
        if offset is not None and (_int(offset) < 0 or len(objects) != 1
                                   or size > PACKED_MAX):
            raise ValueError(f"{path!r}: bad packed entry")
        table.append(path, "file", mode, mtime, size, sha, keys, offset=offset)
    elif kind == "dir":
        table.append(path, "dir", mode, mtime)
    elif kind == "symlink":
        table.append(path, "symlink", mode, mtime, target=_str(item["target"]))
    else:
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
    table = FileTable.of(manifest.files)
    seen: dict[str, FileType] = {}  # in the table's order: nothing is listed twice
    for i in range(len(table)):
        path = table.path(i)
        if not safe_relative(path):
            raise BackupFormatError(f"manifest {manifest.id}: hostile path {path!r}")
        if not any(path == r or path.startswith(r + "/") for r in roots):
            raise BackupFormatError(f"manifest {manifest.id}: {path!r} is outside its paths")
        if path in seen:
            raise BackupFormatError(f"manifest {manifest.id}: {path!r} is listed twice")
        seen[path] = table.kind(i)
    clear: set[str] = set()  # directories whose every ancestor is checked
    for i, (path, kind) in enumerate(seen.items()):
        _check_parents(manifest.id, path, seen, clear)
        if kind == "symlink":
            problem = _link_problem(path, table.target(i), seen, roots)
            if problem:
                raise BackupFormatError(f"manifest {manifest.id}: symlink {path!r} "
                                        f"{problem}")


def refused_links(entries: Iterable[FileEntry], roots: tuple[str, ...]) -> list[str]:
    """The symlinks among ``entries`` that :func:`check_tree` would refuse (only the
    symlinks count: ``entries`` may hold nothing else)."""
    links = {e.path: e.target for e in entries if e.type == "symlink"}
    kinds: dict[str, FileType] = dict.fromkeys(links, "symlink")
    return [path for path, target in links.items()
            if _link_problem(path, target, kinds, roots)]


def _check_parents(sid: str, path: str, seen: dict[str, FileType], clear: set[str]) -> None:
    """No ancestor of ``path`` is listed as anything but a directory; ``clear`` holds
    the ancestors checked already (each is walked up once, not once per file)."""
    parent = path.rpartition("/")[0]  # paths are clean (safe_relative): dirname
    walked = []
    while parent and parent not in clear:
        above = seen.get(parent)
        if above is not None and above != "dir":
            raise BackupFormatError(
                f"manifest {sid}: {path!r} lies below {parent!r}, which is not a directory")
        walked.append(parent)
        parent = parent.rpartition("/")[0]
    clear.update(walked)


def _link_problem(path: str, target: str | None, seen: dict[str, FileType],
                  roots: tuple[str, ...]) -> str | None:
    """Resolve the target one component at a time: it must never climb above the
    environment's root, nor pass *through* another symlink of the snapshot (whose
    real location would make a lexical check meaningless), and it must end inside
    one of the snapshot's ``paths``."""
    target = target or ""
    if not target or target.startswith("/") or "\0" in target:
        return "has a hostile target"
    stack = path.split("/")[:-1]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if not stack:
                return "points outside the environment"
            stack.pop()
            continue
        stack.append(part)
        hop = seen.get("/".join(stack))
        if hop == "symlink" and i < len(parts) - 1:
            return "resolves through another symlink"
    end = "/".join(stack)
    if not any(end == r or end.startswith(r + "/") for r in roots):
        return "points outside the snapshot's paths"
    return None
