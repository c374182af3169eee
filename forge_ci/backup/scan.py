"""What is on the host: list the backup paths, hash what changed, remember the hashes.

Everything runs on the host through the Host seam with standard GNU tools (``find``,
``sha256sum``): file contents are read there, and only their hashes travel. The hash
cache (``<path>/.forge/backup-hashes.json``, mode 0600) lives on the host too - it
holds the hashes of the host's own files, and where the backup stored each content
(random object keys, offsets, and a MAC under the naming key the host does not hold:
see :func:`forge_ci.backup.index.check_location`) - and lets an unchanged file (same
path, size, mtime, ctime and inode) skip hashing and the index lookup. The store is
never asked about files: whether an object exists comes from one listing of
``data/``.

All paths are relative to the environment's root, as ``str`` decoded from the
host's bytes with ``surrogateescape`` (non-UTF-8 names survive the round trip).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from forge_ci.errors import BackupError, RemoteCommandError
from forge_ci.remote import Host, Result, sh

CACHE_PATH = ".forge/backup-hashes.json"
_FIELDS = 8
_FIND_FORMAT = r"%y\0%s\0%T@\0%C@\0%i\0%m\0%p\0%l\0"
_SHA = re.compile(r"[0-9a-f]{64}")
_CACHE_HEAD = b'{"version":1,"entries":{'
# "path":[size,mtime_ns,ctime_ns,inode,"sha256"(,"location")?], as json.dumps writes
# it (ASCII); the location is "<object names, comma-separated>;<offset or ->".
_CACHE_RECORD = re.compile(rb'("(?:[^"\\\x00-\x1f\x7f-\xff]|\\.)*")'
                           rb':\[(-?\d+,-?\d+,-?\d+,-?\d+),"([0-9a-f]{64})"'
                           rb'(?:,"([0-9a-f,;-]+)")?\]')
# After the entries: the MAC of every byte before it, under the naming key.
_CACHE_MAC = re.compile(rb',"mac":"([0-9a-f]{64})"\}')
_RECORD_MAX = 1 << 16  # bytes a record may span (a path is at most 4 KiB, escaped)
_MAC_LABEL = b"forge-ci hash cache\x00"
_LOCATION_SEP = b"|"  # between the metadata and the location in a held entry
_WHERE = re.compile(rb"^((?:[0-9a-f]{64},)*[0-9a-f]{64});(\d{1,13}|-)$")
_WRITE_PIECE = 1 << 20  # the cache goes to the host in pieces of this size


def _held_where(text: bytes) -> bytes:
    """A location as held: ``|<offset or ->;<object names, 32 bytes each>`` (half
    the size of its text); empty if it has not the shape of one."""
    m = _WHERE.match(text)
    if m is None:
        return b""
    return b"".join([_LOCATION_SEP, m.group(2), b";",
                     bytes.fromhex(m.group(1).replace(b",", b"").decode())])


def _where_text(held: bytes) -> str:
    offset, _, objects = held.partition(b";")
    return (",".join(objects[i:i + 32].hex() for i in range(0, len(objects), 32))
            + f";{offset.decode()}")


Place = tuple[tuple[str, ...], int | None]  # object keys, offset (None: segments)


def _place(held: bytes) -> Place:
    offset, _, objects = held.partition(b";")
    keys = []
    for i in range(0, len(objects), 32):
        name = objects[i:i + 32].hex()
        keys.append(f"data/{name[:2]}/{name}")
    return tuple(keys), None if offset == b"-" else int(offset)


def _cache_mac(key: bytes) -> hmac.HMAC:
    return hmac.new(key, _MAC_LABEL, hashlib.sha256)


def _meta(*values: int) -> bytes:
    return b"%d,%d,%d,%d" % values


Kind = Literal["file", "dir", "symlink", "other"]


@dataclass(frozen=True, slots=True)
class Stat:
    path: str
    kind: Kind
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int
    target: str | None = None

    def cache_key(self) -> list[int]:
        return [self.size, self.mtime_ns, self.ctime_ns, self.inode]


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _ns(text: str) -> int:
    return int(Decimal(text).scaleb(9).to_integral_value())


def list_tree(host: Host, root: str, paths: Sequence[str], *, follow_start: bool = True,
              allow_missing: bool = False) -> list[Stat]:
    """As :func:`list_columns`, one :class:`Stat` per entry."""
    return list(list_columns(host, root, paths, follow_start=follow_start,
                             allow_missing=allow_missing))


def list_columns(host: Host, root: str, paths: Sequence[str], *, follow_start: bool = True,
                 allow_missing: bool = False) -> Listing:
    """Every entry under ``paths`` (the paths themselves included), in ``find`` order.

    ``follow_start`` (``find -H``) follows a configured path that is itself a symlink
    (so ``current/web/app/uploads`` works) but never links met below it. A missing
    path is an error unless ``allow_missing``: a backup that silently lost the uploads
    is worse than a failed one.
    """
    if not paths:
        return Listing()
    on_missing = ":" if allow_missing else '{ printf "%s\\n" "$p" >&2; exit 4; }'
    script = (
        f"cd -- {sh(root)} || exit 3\n"
        "set --\n"
        f"for p in {' '.join(sh(p) for p in paths)}; do\n"
        f'  if [ -e "$p" ] || [ -L "$p" ]; then set -- "$@" "./$p"; else {on_missing}; fi\n'
        "done\n"
        '[ "$#" -gt 0 ] || exit 0\n'
        f"exec find {'-H ' if follow_start else ''}\"$@\" -printf '{_FIND_FORMAT}'"
    )
    # Read and parsed as it comes: the whole output (5 MiB at 50,000 files) is never
    # held, nor the copies capturing it would make.
    out = Listing()
    proc = host.start(script)
    try:
        proc.close_stdin()
        rest = b""
        while chunk := proc.read():
            rest = rest + chunk if rest else chunk
            rest = rest[out.parse(rest):]
        status = proc.wait(timeout=3600)
    except BaseException:
        proc.kill()
        raise
    if status == 4:
        missing = proc.stderr().decode("utf-8", "replace").strip()
        raise BackupError(f"{host.name}: backup path {missing!r} does not exist under {root}",
                          hint="fix `backup.paths` in forge.yml, or create the directory")
    host.check(Result(status, b"", proc.stderr()), f"listing the backup paths under {root}")
    if rest:
        raise RemoteCommandError("unexpected output from find (truncated listing?)")
    return out


def stat_paths(host: Host, root: str, paths: Iterable[str]) -> list[Stat]:
    """The entries ``paths`` name (not what lies below them; links not followed); paths
    that are gone are left out. Names go over stdin, so any name and any number work."""
    return list(stat_columns(host, root, (encode(p) for p in paths)))


def stat_columns(host: Host, root: str, paths: Iterable[bytes]) -> Listing:
    """As :func:`stat_paths`, from paths as bytes, into a :class:`Listing`: no object
    per entry, on either side. ``find`` lists them in the order given."""
    stdin = bytearray()
    for path in paths:
        stdin += b"./"
        stdin += path
        stdin += b"\0"
    if not stdin:
        return Listing()
    script = (f"cd -- {sh(root)} || exit 3\n"
              # xargs appends names last; find wants them before its expression.
              "exec xargs -0 -r sh -c 'exec find -P \"$@\" -maxdepth 0 -printf \"$0\"' "
              f"{sh(_FIND_FORMAT)}")
    r = host.run(script, input=bytes(stdin), check=False, timeout=3600)
    del stdin
    # 123: find complained about some path (it vanished) - the others are listed.
    if r.status not in (0, 123):
        host.check(r, f"checking files under {root}")
    return parse_columns(r.stdout)


def parse_listing(data: bytes) -> list[Stat]:
    """The ``Stat`` of each record of ``find -printf _FIND_FORMAT`` output."""
    return list(parse_columns(data))


def parse_columns(data: bytes) -> Listing:
    """The records of ``find -printf _FIND_FORMAT`` output as a :class:`Listing`."""
    out = Listing()
    if out.parse(data) != len(data):
        raise RemoteCommandError("unexpected output from find (truncated listing?)")
    return out


_FILE, _DIR, _LINK, _OTHER, _GONE = 0, 1, 2, 3, 4
_KIND_CODES = {b"f": _FILE, b"d": _DIR, b"l": _LINK}
_KINDS: tuple[Kind, ...] = ("file", "dir", "symlink", "other", "other")


class Listing:
    """Entries of a listing as columns, one row each, in ``find`` order: the path's
    bytes in one buffer and a few machine integers per entry instead of a
    :class:`Stat`, its path string and its int objects (a media library has one
    entry per file). :meth:`path` and :meth:`stat` give a row's; a row can be
    re-stated (:meth:`update`) or dropped (:meth:`drop`: no longer listed, its row
    number kept)."""

    def __init__(self) -> None:
        self._names = bytearray()  # every path's bytes, one after the other
        self._ends = array("I")  # where each row's path ends in _names
        self._kinds = bytearray()
        self._ints = array("q")  # size, mtime_ns, ctime_ns, inode per row
        self._modes = array("H")  # st_mode bits per row (16 of them)
        self._targets: dict[int, str] = {}  # symlinks' targets

    def parse(self, data: bytes) -> int:
        """Add the whole records of ``find -printf _FIND_FORMAT`` output at the start
        of ``data``, one at a time; returns where the first incomplete one starts."""
        pos, end = 0, len(data)
        while pos < end:
            start, fields = pos, []
            for _ in range(_FIELDS):
                stop = data.find(b"\0", pos)
                if stop < 0:
                    return start
                fields.append(data[pos:stop])
                pos = stop + 1
            kind, size, mtime, ctime, inode, mode, path, target = fields
            mtime_ns = _ns(mtime.decode())
            self._add(path[2:] if path.startswith(b"./") else path,
                      _KIND_CODES.get(kind, _OTHER), int(size), mtime_ns,
                      mtime_ns if ctime == mtime else _ns(ctime.decode()), int(inode),
                      int(mode, 8), decode(target) if kind == b"l" else None)
        return pos

    def add(self, path: str, kind: Kind, size: int, mtime_ns: int, ctime_ns: int,
            inode: int, mode: int, target: str | None = None) -> int:
        return self._add(encode(path), _KINDS.index(kind), size, mtime_ns, ctime_ns, inode,
                         mode, target)

    def _add(self, path: bytes, kind: int, size: int, mtime_ns: int, ctime_ns: int,
             inode: int, mode: int, target: str | None) -> int:
        row = len(self._kinds)
        self._names += path
        self._ends.append(len(self._names))
        self._kinds.append(kind)
        self._ints.extend((size, mtime_ns, ctime_ns, inode))
        self._modes.append(mode)
        if target is not None:
            self._targets[row] = target
        return row

    def update(self, row: int, st: Stat) -> None:
        """Row ``row`` (same path) as ``st`` now says."""
        self._kinds[row] = _KINDS.index(st.kind)
        self._ints[row * 4:row * 4 + 4] = array("q", (st.size, st.mtime_ns, st.ctime_ns,
                                                      st.inode))
        self._modes[row] = st.mode
        self._targets.pop(row, None)
        if st.target is not None:
            self._targets[row] = st.target

    def drop(self, row: int) -> None:
        self._kinds[row] = _GONE

    def path(self, row: int) -> str:
        return self._names[self._ends[row - 1] if row else 0:self._ends[row]].decode(
            "utf-8", "surrogateescape")

    def path_bytes(self, row: int) -> bytes:
        """The row's path as the host gave it."""
        return bytes(self._names[self._ends[row - 1] if row else 0:self._ends[row]])

    def same_meta(self, row: int, other: Listing, other_row: int) -> bool:
        """Whether the row's :meth:`cache_key` is ``other_row``'s of ``other``."""
        return self._ints[row * 4:row * 4 + 4] == other._ints[other_row * 4:other_row * 4 + 4]

    def __len__(self) -> int:
        return len(self._kinds)

    def __iter__(self) -> Iterator[Stat]:
        return (self.stat(row) for row in range(len(self)) if self._kinds[row] != _GONE)

    def kind(self, row: int) -> Kind | None:
        """None: dropped."""
        k = self._kinds[row]
        return None if k == _GONE else _KINDS[k]

    def is_file(self, row: int) -> bool:
        return self._kinds[row] == _FILE

    def size(self, row: int) -> int:
        return self._ints[row * 4]

    def mtime_ns(self, row: int) -> int:
        return self._ints[row * 4 + 1]

    def mode(self, row: int) -> int:
        return self._modes[row]

    def target(self, row: int) -> str | None:
        return self._targets.get(row)

    def cache_key(self, row: int) -> list[int]:
        return self._ints[row * 4:row * 4 + 4].tolist()

    def stat(self, row: int) -> Stat:
        size, mtime_ns, ctime_ns, inode = self._ints[row * 4:row * 4 + 4]
        mode = self._modes[row]
        return Stat(self.path(row), _KINDS[self._kinds[row]], size, mtime_ns, ctime_ns,
                    inode, mode, self._targets.get(row))


def hash_files(host: Host, root: str, paths: Iterable[str]) -> dict[str, str]:
    """SHA-256 of each file, computed on the host. Files that vanished meanwhile are
    simply absent from the result."""
    todo = list(paths)
    if not todo:
        return {}
    stdin = b"".join(encode(p) + b"\0" for p in todo)
    script = f"cd -- {sh(root)} || exit 3\nexec xargs -0 -r sha256sum -z --"
    r = host.run(script, input=stdin, check=False, timeout=None)
    # 123: some sha256sum failed - a file vanished between listing and hashing.
    if r.status not in (0, 123):
        host.check(r, f"hashing files under {root}")
    out = {}
    for rec in r.stdout.split(b"\0"):
        if len(rec) > 66:
            out[decode(rec[66:])] = rec[:64].decode("ascii")
    return out


class HashCache:
    """``path -> (size, mtime, ctime, inode, sha256[, location])`` as last seen on
    the host.

    Held compactly (one ``bytes`` per file: the hash's 32 bytes, then the metadata as
    the file writes it, then the location), and read from the file a record at a time
    when it has the shape :meth:`write` gives it; anything else is parsed as plain
    JSON. Locations count only when the file's MAC under the naming key holds (the
    host does not hold that key): otherwise they are dropped as it is read."""

    def __init__(self, entries: Mapping[str, list[object]] | None = None) -> None:
        self._entries: dict[str, bytes] = {}
        self._trusted = False  # the locations held count (the file's MAC holds)
        for path, entry in (entries or {}).items():
            if not (isinstance(entry, list) and len(entry) in (5, 6)):
                continue
            meta = [v for v in entry[:4] if type(v) is int]
            sha = entry[4]
            if len(meta) == 4 and isinstance(sha, str) and _SHA.fullmatch(sha):
                self._entries[sys.intern(path)] = bytes.fromhex(sha) + _meta(*meta)

    @classmethod
    def load(cls, host: Host, root: str, naming_key: bytes | None = None) -> HashCache:
        """The host's cache; with ``naming_key``, with the locations it records if
        its MAC holds. Read as it streams from the host when it has the shape
        :meth:`write` gives it (neither the file nor a copy of it is held whole)."""
        path = f"{root}/{CACHE_PATH}"
        try:
            proc = host.start(f"exec cat -- {sh(path)} 2>/dev/null")
            try:
                cache = cls._read(iter(proc.read, b""), naming_key)
            finally:
                proc.kill()
            if cache is not None:
                return cache
            raw = host.read(path)  # another shape: plain JSON
            doc = json.loads(raw) if raw else {}
            entries = doc.get("entries", {}) if doc.get("version") == 1 else {}
        except (ValueError, AttributeError, RemoteCommandError):
            entries = {}  # a damaged cache only costs re-hashing
        return cls(entries if isinstance(entries, dict) else {})

    @classmethod
    def _scan(cls, raw: bytes, naming_key: bytes | None = None) -> HashCache | None:
        """:meth:`_read` of the whole file at once."""
        return cls._read([raw], naming_key)

    @classmethod
    def _read(cls, chunks: Iterable[bytes], naming_key: bytes | None = None
              ) -> HashCache | None:
        """Records one by one as ``chunks`` come, without the parsed document;
        None: not the shape :meth:`write` gives. Locations count once the MAC at
        the end holds."""
        cache, mac = cls(), _cache_mac(naming_key or b"")
        pieces = iter(chunks)
        buf, pos, eof, begun = b"", 0, False, False
        while True:
            if not eof and len(buf) - pos < _RECORD_MAX:
                chunk = next(pieces, b"")
                if chunk:
                    mac.update(buf[:pos])  # read: all of it before the MAC
                    buf, pos = buf[pos:] + chunk, 0
                    continue
                eof = True
            if not begun:
                if not buf.startswith(_CACHE_HEAD):
                    return cache if eof and not buf else None  # nothing there: empty
                pos, begun = len(_CACHE_HEAD), True
            if buf[pos:pos + 1] == b"}":
                break  # the entries end
            m = _CACHE_RECORD.match(buf, pos)
            if m is None:
                return None
            key, meta, sha, where = m.group(1, 2, 3, 4)
            path = json.loads(key) if b"\\" in key else key[1:-1].decode("ascii")
            # Interned: the listing's path of the same name is then this very string.
            cache._entries[sys.intern(path)] = bytes.fromhex(sha.decode("ascii")) + meta + (
                _held_where(where) if where else b"")
            pos = m.end()
            if buf[pos:pos + 1] == b",":
                pos += 1
            elif buf[pos:pos + 1] != b"}":
                return None
        mac.update(buf[:pos + 1])
        rest = buf[pos + 1:] + b"".join(pieces)  # the MAC's few bytes
        tail = _CACHE_MAC.fullmatch(rest)
        if tail is None and rest != b"}":
            return None
        cache._trusted = naming_key is not None and tail is not None and hmac.compare_digest(
            mac.hexdigest().encode(), tail.group(1))
        return cache

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, st: Stat) -> str | None:
        entry = self._entries.get(st.path)
        if entry is not None and entry[32:].split(_LOCATION_SEP, 1)[0] == _meta(*st.cache_key()):
            return entry[:32].hex()
        return None

    def location(self, st: Stat) -> str | None:
        """Where the content of an unchanged file was stored, as the last backup wrote
        it here (its MAC checked; see :func:`forge_ci.backup.index.parse_location`)."""
        entry = self._entries.get(st.path)
        if entry is None:
            return None
        meta, _, where = entry[32:].partition(_LOCATION_SEP)
        if not where or not self._trusted or meta != _meta(*st.cache_key()):
            return None
        return _where_text(where)

    def take(self, st: Stat) -> tuple[str, Place | None] | None:
        """SHA-256 and recorded place (object keys, offset or None for segments; see
        :meth:`location`) of an unchanged file, removing its entry: each is used
        once, and the cache shrinks as it is."""
        entry = self._entries.pop(st.path, None)
        if entry is None:
            return None
        meta, _, where = entry[32:].partition(_LOCATION_SEP)
        if meta != _meta(*st.cache_key()):
            return None
        return entry[:32].hex(), _place(where) if where and self._trusted else None

    @classmethod
    def of(cls, stats: Iterable[Stat], hashes: Mapping[str, str]) -> HashCache:
        return cls({s.path: [*s.cache_key(), hashes[s.path]] for s in stats
                    if s.path in hashes})

    def save(self, host: Host, root: str) -> None:
        """As plain JSON, hashes only (locations need :meth:`write` and its MAC)."""
        entries = {path: [*(int(v) for v in entry[32:].split(_LOCATION_SEP, 1)[0]
                            .split(b",")), entry[:32].hex()]
                   for path, entry in self._entries.items()}
        data = json.dumps({"version": 1, "entries": entries},
                          separators=(",", ":")).encode("ascii")
        host.makedirs(f"{root}/.forge")
        host.write_atomic(f"{root}/{CACHE_PATH}", data, mode=0o600)

    @staticmethod
    def write(host: Host, root: str,
              records: Iterable[tuple[Stat, str, str | None]], naming_key: bytes, *,
              piece: int = _WRITE_PIECE) -> None:
        """Save the cache straight from ``(stat, sha256, location or None)`` records,
        ``piece`` bytes at a time (a temporary file renamed into place at the end), so
        neither a table of every file nor the whole file is held at once. It ends with
        the MAC (under ``naming_key``) of everything before it."""
        final = f"{root}/{CACHE_PATH}"
        tmp = f"{final}.forge-part"
        host.makedirs(f"{root}/.forge")
        mac = _cache_mac(naming_key)
        out = io.BytesIO()
        out.write(_CACHE_HEAD)
        sep, started = b"", False
        for st, sha, where in records:
            out.write(b"%s%s:[%d,%d,%d,%d,\"%s\"%s]" % (
                sep, json.dumps(st.path).encode("ascii"), st.size, st.mtime_ns,
                st.ctime_ns, st.inode, sha.encode("ascii"),
                b',"%s"' % where.encode("ascii") if where else b""))
            sep = b","
            if out.tell() >= piece:
                data = out.getvalue()
                out = io.BytesIO()  # one copy of the piece held while it travels
                mac.update(data)
                started = _send_piece(host, tmp, data, started)
                del data
        out.write(b"}")
        mac.update(out.getbuffer())
        out.write(b',"mac":"%s"}' % mac.hexdigest().encode())
        data = out.getvalue()
        del out
        _send_piece(host, tmp, data, started)
        host.check(host.run(f"sync {sh(tmp)} 2>/dev/null; mv -f -- {sh(tmp)} {sh(final)}",
                            check=False), f"writing {final}")


def _send_piece(host: Host, path: str, data: bytes, started: bool) -> bool:
    if started:
        host.append(path, data)
    else:
        host.write_atomic(path, data, mode=0o600)
    return True
