"""Where stored content lives: alone under its name, or inside a pack.

The dedup index of a backup is what it can read without the identity:

* the ``data/`` listing: an entry counts only while its objects are listed;
* under ``index/<tag>/`` (see FORMAT.md, "Packs, segments and the index"):

  - *run objects* ``index/<tag>/<32 hex>``: JSON ``{"format": "forge-ci index",
    "version": 1, "packs": {"<pack key>": [["<name>", offset, size], ...]},
    "files": {"<name>": {"size": N, "objects": ["<key>", ...]}}}`` - small contents
    in packs, large ones as consecutive whole objects (segments). Each backup that
    stored something writes one; every backup reads all of them (they are few and
    small). Earlier versions also merged everything into one such object: it is
    still read, and paged by the next merge.
  - *pages* ``index/<tag>/page/<32 hex>``: the same JSON, holding only the names of
    one range, and a *directory* ``index/<tag>/dir/<32 hex>``: ``{"format":
    "forge-ci index directory", "version": 1, "pages": [["<first name>", "<page
    key>", entries], ...]}`` sorted by first name; a page holds the names from its
    first name up to (not including) the next page's. A backup reads the directory
    and only the pages covering the names it must look up (:meth:`BlobIndex.fetch`).

Every object is age-encrypted to an X25519 key derived from the naming key
(:func:`forge_ci.backup.layout.index_secret`), so whoever holds the recipients - and
only they - can read them (and to the recipients themselves, so the identity opens
them like every other object).

Prune deletes packs no snapshot references and never rewrites an index, so stale
entries are skipped here. When run objects pile up (``CONSOLIDATE`` of them, or more
entries than one page holds), a backup *merges*: it rewrites only the pages whose
range their names fall in (splitting a page grown past ``PAGE_ENTRIES``), writes a
new directory naming the kept and the new pages, then deletes the old directory,
the replaced pages and the run objects it merged. Losing or damaging any index
object costs only re-uploads: restore never reads the index (manifests name packs
and offsets).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from forge_ci.backup import layout
from forge_ci.backup.format.age import Recipient
from forge_ci.backup.format.keys import X25519Identity
from forge_ci.backup.objects import seal, unseal
from forge_ci.backup.pack import MEMBER_MAX, Member
from forge_ci.backup.repo import Repository
from forge_ci.errors import BackupError, StoreError

FORMAT = "forge-ci index"
DIRECTORY_FORMAT = "forge-ci index directory"
VERSION = 1
CONSOLIDATE = 16
PAGE_ENTRIES = 1024  # a page is split past this many names (~100 kB of JSON)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RUN_KEY = re.compile(r"^index/[0-9a-f]{16}/[0-9a-f]{32}$")
_DIR_KEY = re.compile(r"^index/[0-9a-f]{16}/dir/[0-9a-f]{32}$")
_PAGE_KEY = re.compile(r"^index/[0-9a-f]{16}/page/[0-9a-f]{32}$")

Location = tuple[tuple[str, ...], int | None]  # objects, offset (None: whole objects)
Entry = tuple[str, int, int]  # pack key, offset, size
Whole = tuple[int, tuple[str, ...]]  # size, segment keys
Page = tuple[str, str, int]  # first name, key, entries


# A packed member's place, as one int: pack number << 64 | offset << 24 | size
# (size <= MEMBER_MAX < 2**24; offset < 2**40, far beyond a pack's plaintext).
_SIZE_BITS, _OFFSET_BITS = 24, 40
_SIZE_MASK, _OFFSET_MASK = (1 << _SIZE_BITS) - 1, (1 << _OFFSET_BITS) - 1
_LOW_MASK = (1 << 64) - 1


class _Places:
    """Content name (its 32 raw bytes) -> a packed member's place (``pack number <<
    64 | offset << 24 | size``), held as machine integers: the entries in arrays, in
    the order added (a name's 32 bytes, its place as two integers), and an
    open-addressed table of entry numbers keyed by the name's first 4 bytes. No
    object per entry: ~70 bytes per name where a dict of ``bytes`` to ``int`` costs
    ~145. Names are MACs, so their first 4 bytes spread them evenly."""

    def __init__(self) -> None:
        self._names = bytearray()
        self._lows = array("Q")  # offset << 24 | size
        self._packs = array("I")
        self._table(1024)

    def _table(self, slots: int) -> None:
        self._mask = slots - 1
        self._keys = array("I", bytes(4 * slots))  # the name's first 4 bytes
        self._slots = array("i", b"\xff" * (4 * slots))  # entry number; -1: free
        for n in range(len(self._lows)):
            key = int.from_bytes(self._names[n * 32:n * 32 + 4], "little")
            i = key & self._mask
            while self._slots[i] >= 0:
                i = (i + 1) & self._mask
            self._slots[i], self._keys[i] = n, key

    def _entry(self, raw: bytes) -> tuple[int, int]:
        """(slot, entry number) of ``raw``; entry -1 and the free slot where it would go."""
        key = int.from_bytes(raw[:4], "little")
        i = key & self._mask
        keys, slots, names = self._keys, self._slots, self._names
        while (n := slots[i]) >= 0:
            if keys[i] == key and names[n * 32:n * 32 + 32] == raw:
                return i, n
            i = (i + 1) & self._mask
        return i, -1

    def get(self, raw: bytes) -> int | None:
        n = self._entry(raw)[1]
        return None if n < 0 else self._packs[n] << 64 | self._lows[n]

    def __contains__(self, raw: bytes) -> bool:
        return self._entry(raw)[1] >= 0

    def put(self, raw: bytes, place: int) -> None:
        i, n = self._entry(raw)
        if n >= 0:
            self._lows[n], self._packs[n] = place & _LOW_MASK, place >> 64
            return
        self._slots[i], self._keys[i] = len(self._lows), int.from_bytes(raw[:4], "little")
        self._names += raw
        self._lows.append(place & _LOW_MASK)
        self._packs.append(place >> 64)
        if len(self._lows) * 3 > 2 * (self._mask + 1):
            self._table(2 * (self._mask + 1))

    def __len__(self) -> int:
        return len(self._lows)

    def name(self, n: int) -> bytes:
        """Entry ``n``'s name."""
        return bytes(self._names[n * 32:n * 32 + 32])

    def by_first_byte(self, keep: Callable[[bytes, int], bool]) -> list[array[int]]:
        """The numbers of the entries whose name and place ``keep`` holds, in 256
        buckets by the name's first byte: the names can then be walked in order a
        bucket at a time, not sorted all at once as one object each."""
        buckets = [array("I") for _ in range(256)]
        names, packs = self._names, self._packs
        for n, low in enumerate(self._lows):
            raw = bytes(names[n * 32:n * 32 + 32])
            if keep(raw, packs[n] << 64 | low):
                buckets[raw[0]].append(n)
        return buckets

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Every name and place, in the order added."""
        names, packs = self._names, self._packs
        for n, low in enumerate(self._lows):
            yield bytes(names[n * 32:n * 32 + 32]), packs[n] << 64 | low


@dataclass
class Directory:
    """One directory object: its pages' first names and keys, sorted."""

    key: str
    firsts: list[str]
    keys: list[str]
    counts: list[int]

    def covering(self, name: str) -> int | None:
        """The page whose range holds ``name``, or None (before the first page)."""
        i = bisect.bisect_right(self.firsts, name) - 1
        return i if i >= 0 else None

    def bounds(self, i: int) -> tuple[str, str | None]:
        return self.firsts[i], self.firsts[i + 1] if i + 1 < len(self.firsts) else None


@dataclass
class BlobIndex:
    """Content name -> where it is stored, for contents whose object is present.

    Holds what was read (run objects, the pages fetched) and what this run stored or
    learned from the hash cache, compactly, since a media library has one entry per
    file: names as their 32 raw bytes, a packed member's place as one int with its
    pack as a number (each pack key is held once)."""

    data_keys: set[str]
    whole: dict[str, Whole] = field(default_factory=dict)  # size, keys
    index_keys: list[str] = field(default_factory=list)  # run objects read
    directories: list[Directory] = field(default_factory=list)
    page_keys: set[str] = field(default_factory=set)  # every page listed
    pages_read: set[str] = field(default_factory=set)  # fetched (read or failed)
    run_names: set[bytes] = field(default_factory=set)  # names the run objects hold
    unreadable: int = 0
    fetcher: Callable[[list[str]], Iterator[tuple[str, Parsed | None]]] | None = \
        field(default=None, repr=False)
    _packed: _Places = field(default_factory=_Places, repr=False)
    _packs: list[str] = field(default_factory=list, repr=False)
    _pack_no: dict[str, int] = field(default_factory=dict, repr=False)
    _pack_keys: list[tuple[str]] = field(default_factory=list, repr=False)  # what find gives

    @property
    def packed(self) -> Iterator[str]:
        """The names of packed contents (present or queued)."""
        return (name.hex() for name, _place in self._packed.items())

    def has_packed(self) -> bool:
        return bool(self._packed)

    def packed_entries(self) -> Iterator[tuple[str, str, int, int]]:
        """(name, pack key, offset, size) of every packed content known."""
        for name, place in self._packed.items():
            pack, offset, size = self._unplace(place)
            yield name.hex(), pack, offset, size

    def _place(self, pack: str, offset: int, size: int) -> int:
        if not (0 <= offset <= _OFFSET_MASK and 0 < size <= _SIZE_MASK):
            raise ValueError(f"member of {pack} out of range: {offset}+{size}")
        no = self._pack_no.get(pack)
        if no is None:
            no = self._pack_no[pack] = len(self._packs)
            self._packs.append(pack)
            self._pack_keys.append((pack,))
        return no << 64 | offset << _SIZE_BITS | size

    def _unplace(self, place: int) -> Entry:
        return (self._packs[place >> 64], place >> _SIZE_BITS & _OFFSET_MASK,
                place & _SIZE_MASK)

    def members_of(self, packs: Iterable[str]) -> dict[str, list[Member]]:
        """The members recorded in each of ``packs``."""
        wanted = {self._pack_no[k] for k in packs if k in self._pack_no}
        out: dict[str, list[Member]] = {}
        for raw, place in self._packed.items():
            if place >> 64 in wanted:
                pack, offset, size = self._unplace(place)
                out.setdefault(pack, []).append((raw.hex(), offset, size))
        return out

    def lookup_packed(self, name: str) -> Entry | None:
        """Where a packed content is (stored or queued), or None."""
        place = self._packed.get(bytes.fromhex(name))
        return None if place is None else self._unplace(place)

    def find(self, name: str) -> Location | None:
        """Where a content is stored, as far as what was read tells (see :meth:`fetch`)."""
        place = self._packed.get(bytes.fromhex(name))
        if place is not None:
            no = place >> 64
            if self._packs[no] in self.data_keys:
                return self._pack_keys[no], place >> _SIZE_BITS & _OFFSET_MASK
        segments = self.whole.get(name)
        if segments is not None and all(k in self.data_keys for k in segments[1]):
            return segments[1], None
        return None

    def knows(self, name: str) -> bool:
        """Stored, or queued by this run (in a pack or as segments)."""
        return self.lookup_packed(name) is not None or name in self.whole

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def add_packed(self, name: str, key: str, offset: int, size: int) -> None:
        """Record a member queued in a pack; :meth:`find` sees it once ``stored(key)``."""
        if name not in self:
            self._packed.put(bytes.fromhex(name), self._place(key, offset, size))

    def load_packed(self, name: str, key: str, offset: int, size: int) -> None:
        """Record a member an index object (or a checked cache entry) names; first wins."""
        raw = bytes.fromhex(name)
        if raw not in self._packed:
            self._packed.put(raw, self._place(key, offset, size))

    def load_whole(self, name: str, size: int, keys: tuple[str, ...]) -> None:
        """Record segments an index object (or a checked cache entry) names."""
        if all(k in self.data_keys for k in keys):
            self.whole.setdefault(name, (size, keys))

    def add_whole(self, name: str, size: int, keys: tuple[str, ...]) -> None:
        """Record a content queued as segments; found once every key is ``stored``."""
        if name not in self:
            self.whole[name] = (size, keys)

    def seed(self, name: str, size: int, where: Location) -> bool:
        """Take a location the hash cache recorded (its MAC checked) while its
        objects are listed; returns whether it counts."""
        objects, offset = where
        if not all(k in self.data_keys for k in objects):
            return False
        if offset is None:
            self.whole.setdefault(name, (size, objects))
            return True
        try:
            self.load_packed(name, objects[0], offset, size)
        except ValueError:
            return False  # out of range: not a place a backup wrote
        return True

    def stored(self, keys: Iterable[str]) -> None:
        self.data_keys.update(keys)

    def absorb(self, parsed: Parsed) -> int:
        """Take the live entries of one parsed index object; returns how many."""
        packs, files = parsed
        n = 0
        for pack, members in packs.items():
            if pack not in self.data_keys:
                continue  # pruned
            for name, offset, size in members:
                self.load_packed(name, pack, offset, size)
                n += 1
        for name, (size, segments) in files.items():
            if all(k in self.data_keys for k in segments):
                self.whole.setdefault(name, (size, segments))
                n += 1
        return n

    # -- pages ---------------------------------------------------------------

    def pages_for(self, name: str) -> list[str]:
        """The page keys (one per directory) whose range holds ``name``."""
        out = []
        for d in self.directories:
            i = d.covering(name)
            if i is not None:
                out.append(d.keys[i])
        return out

    def fetch(self, names: Iterable[str], *, found_too: bool = False) -> int:
        """Read the pages covering those of ``names`` not found yet (``found_too``:
        all of them); returns how many pages were read. After it, :meth:`find`
        answers for every one of ``names``."""
        if not self.directories or self.fetcher is None:
            return 0
        wanted: set[str] = set()
        for name in names:
            if found_too or self.find(name) is None:
                wanted.update(k for k in self.pages_for(name) if k not in self.pages_read)
        return self._read_pages(sorted(wanted))

    def fetch_all(self) -> int:
        keys = sorted({k for d in self.directories for k in d.keys} - self.pages_read)
        return self._read_pages(keys)

    def _read_pages(self, keys: list[str]) -> int:
        if not keys or self.fetcher is None:
            return 0
        for key, parsed in self.fetcher(keys):
            self.pages_read.add(key)
            if parsed is None or not self._in_range(key, parsed):
                self.unreadable += 1
                continue
            self.absorb(parsed)
        return len(keys)

    def _in_range(self, key: str, parsed: Parsed) -> bool:
        """Every name of a page lies in its range (in each directory naming it)."""
        packs, files = parsed
        names = [m[0] for members in packs.values() for m in members] + list(files)
        for d in self.directories:
            for i, k in enumerate(d.keys):
                if k == key:
                    lo, hi = d.bounds(i)
                    if any(n < lo or (hi is not None and n >= hi) for n in names):
                        return False
        return True


# -- locations the hash cache keeps ------------------------------------------------

def location_text(objects: tuple[str, ...], offset: int | None) -> str:
    """A stored content's place as the hash cache keeps it: ``<object names>;<offset
    or ->`` (the cache file as a whole carries a MAC under the naming key: see
    :class:`forge_ci.backup.scan.HashCache`)."""
    return f"{','.join(o[-64:] for o in objects)};{'-' if offset is None else offset}"


def _identity(repo: Repository) -> X25519Identity:
    return X25519Identity(layout.index_secret(repo.naming_key()))


T = TypeVar("T")


def _parallel(keys: list[str], read: Callable[[str], T], workers: int
              ) -> Iterator[tuple[str, T]]:
    if len(keys) <= 1:
        yield from ((k, read(k)) for k in keys)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(keys)),
                            thread_name_prefix="forge-index") as pool:
        yield from zip(keys, pool.map(read, keys), strict=True)


def load(repo: Repository, data_keys: set[str], *, workers: int = 8) -> BlobIndex:
    """List this recipient set's index; read its run objects and directories (in
    parallel). Pages are read later, only those :meth:`BlobIndex.fetch` needs."""
    index = BlobIndex(set(data_keys))
    listed = list(repo.store.list(layout.index_prefix(repo.naming_key())))
    runs = [k for k in listed if _RUN_KEY.match(k)]
    dirs = [k for k in listed if _DIR_KEY.match(k)]
    index.page_keys = {k for k in listed if _PAGE_KEY.match(k)}
    if not (runs or dirs or index.page_keys):
        return index
    identity = _identity(repo)
    prefix = layout.index_prefix(repo.naming_key())

    def plain(key: str) -> bytes:
        return b"".join(unseal(repo.store.get(key), [identity]))

    def read(key: str) -> Parsed | None:
        try:
            return parse(plain(key))
        except (BackupError, StoreError, ValueError):
            return None  # gone meanwhile or damaged: its contents are uploaded again

    def read_dir(key: str) -> Directory | None:
        try:
            return parse_directory(key, plain(key), prefix)
        except (BackupError, StoreError, ValueError):
            return None

    index.fetcher = lambda keys: _parallel(keys, read, workers)
    for key, parsed in _parallel(runs, read, workers):
        if parsed is None:
            index.unreadable += 1
            continue
        index.index_keys.append(key)
        index.absorb(parsed)
        packs, files = parsed
        index.run_names.update(bytes.fromhex(m[0]) for ms in packs.values() for m in ms)
        index.run_names.update(bytes.fromhex(n) for n in files)
    for _key, directory in _parallel(dirs, read_dir, workers):
        if directory is None:
            index.unreadable += 1
        else:
            index.directories.append(directory)
    return index


def save(repo: Repository, index: BlobIndex, new_packs: Mapping[str, int],
         new_files: Mapping[str, Whole] | None = None, *,
         consolidate: int = CONSOLIDATE, page_entries: int | None = None) -> int:
    """Write this run's index object, or merge into pages; returns objects deleted.

    ``new_packs``: the packs this run stored (key -> how many members: their entries
    are ``index``'s); ``new_files``: the large contents it stored. Merges when run
    objects pile up (``consolidate``), when they (and this run's) hold more names
    than a page, or when several directories exist."""
    page_entries = page_entries or PAGE_ENTRIES
    files = dict(new_files or {})
    added = sum(new_packs.values()) + len(files)
    pending = len(index.run_names) + added
    merge = len(index.directories) > 1 or (bool(pending) and (
        len(index.index_keys) + 1 >= consolidate or pending > page_entries))
    if not merge:
        if added:
            _put(repo, _run_key(repo), dumps(index.members_of(new_packs), files))
        return 0
    pending_names = itertools.chain(
        (n.hex() for n in index.run_names),
        (m[0] for ms in index.members_of(new_packs).values() for m in ms)
        if index.directories else (), files)
    return _merge(repo, index, pending_names, page_entries)


def _run_key(repo: Repository) -> str:
    return layout.new_index_key(repo.naming_key())


def _put(repo: Repository, key: str, body: bytes) -> None:
    # To the recipients too, so `age -d` with the real identity opens it like any object.
    recipients: list[Recipient] = [_identity(repo).recipient, *repo.recipients]
    repo.store.put(key, seal([body], recipients, mode="compress"))


def _merge(repo: Repository, index: BlobIndex, pending: Iterable[str], page_entries: int
           ) -> int:
    """Rewrite the pages ``pending`` names fall in; write the new directory; delete
    what it replaces. Works on the names' raw bytes, sorted: no second table of the
    entries (a first backup pages every name of a media library)."""
    prefix = layout.index_prefix(repo.naming_key())
    old = index.directories[0] if len(index.directories) == 1 else None
    affected: set[int] = set()
    firsts: list[bytes] = []
    if old is None:
        index.fetch_all()  # none, or several: every page is rewritten
    else:
        firsts = [bytes.fromhex(f) for f in old.firsts]
        todo = []
        for name in pending:
            i = old.covering(name)
            affected.add(0 if i is None else i)
            todo.append(name)
        index.fetch(todo, found_too=True)  # the pages rewritten are read whole first
        del todo

    def page_of(raw: bytes) -> int:
        return max(bisect.bisect_right(firsts, raw) - 1, 0)

    # Each rewritten page's names, counted (by the old page their range is in), then
    # walked in order a first byte at a time: a first backup pages every name of a
    # media library, and a list of them all (one object each) outlived itself in the
    # allocator's arenas.
    counts: dict[int, int] = {}

    def keep(raw: bytes, place: int | None) -> bool:
        if place is not None and place >> 64 not in live_packs:
            return False
        i = 0 if old is None else page_of(raw)
        if old is not None and i not in affected:
            return False
        counts[i] = counts.get(i, 0) + 1
        return True

    live_packs = {no for no, pack in enumerate(index._packs) if pack in index.data_keys}
    packed = index._packed
    buckets = packed.by_first_byte(keep)
    wholes: list[list[bytes]] = [[] for _ in range(256)]
    for name, (_size, segments) in index.whole.items():
        raw = bytes.fromhex(name)
        place = packed.get(raw)
        if place is not None and place >> 64 in live_packs:
            continue  # packed too: named once, as packed (the page body's rule)
        if all(k in index.data_keys for k in segments) and keep(raw, None):
            wholes[raw[0]].append(raw)

    def in_order() -> Iterator[bytes]:
        for first_byte in range(256):
            raws = [packed.name(n) for n in buckets[first_byte]] + wholes[first_byte]
            raws.sort()
            yield from raws

    names = in_order()
    pages: list[Page] = []
    if old is not None:
        pages += [(old.firsts[i], old.keys[i], old.counts[i])
                  for i in range(len(old.keys)) if i not in affected]
    for i in sorted(counts):
        n = counts[i]
        chunks = -(-n // page_entries)
        for c in range(chunks):
            part = list(itertools.islice(names, (c + 1) * n // chunks - c * n // chunks))
            first = part[0].hex()
            if c == 0 and old is not None:
                first = min(first, old.firsts[i])
            key = f"{prefix}page/{os.urandom(16).hex()}"
            _put(repo, key, _page_body(index, part))
            pages.append((first, key, len(part)))
    pages.sort()
    _put(repo, f"{prefix}dir/{os.urandom(16).hex()}", dumps_directory(pages))
    named = {p[1] for p in pages}
    gone = [d.key for d in index.directories]
    gone += sorted(index.page_keys - named)  # replaced, and any no directory names
    gone += index.index_keys
    for key in gone:
        repo.store.delete(key)
    return len(gone)


def _page_body(index: BlobIndex, names: list[bytes]) -> bytes:
    packs: dict[str, list[Member]] = {}
    files: dict[str, Whole] = {}
    for raw in names:
        name = raw.hex()
        place = index._packed.get(raw)
        if place is not None and index._packs[place >> 64] in index.data_keys:
            pack, offset, size = index._unplace(place)
            packs.setdefault(pack, []).append((name, offset, size))
        else:
            files[name] = index.whole[name]
    return dumps(packs, files)


def dumps(packs: Mapping[str, list[Member]],
          files: Mapping[str, Whole] | None = None) -> bytes:
    doc = {"format": FORMAT, "version": VERSION,
           "packs": {k: [list(m) for m in sorted(v, key=lambda m: m[1])]
                     for k, v in sorted(packs.items())},
           "files": {name: {"size": size, "objects": list(keys)}
                     for name, (size, keys) in sorted((files or {}).items())}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def dumps_directory(pages: list[Page]) -> bytes:
    doc = {"format": DIRECTORY_FORMAT, "version": VERSION,
           "pages": [list(p) for p in sorted(pages)]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


Parsed = tuple[dict[str, list[Member]], dict[str, Whole]]


def parse(data: bytes) -> Parsed:
    """Validate an index object's (or page's) plaintext; ValueError if malformed."""
    doc: Any = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT \
            or doc.get("version") != VERSION or not isinstance(doc.get("packs"), dict) \
            or not isinstance(doc.get("files", {}), dict):
        raise ValueError("not a forge-ci index")
    out: dict[str, list[Member]] = {}
    for pack, members in doc["packs"].items():
        if not layout.is_data_key(pack) or not isinstance(members, list):
            raise ValueError("bad pack key")
        entries = []
        for m in members:
            if not (isinstance(m, list) and len(m) == 3 and isinstance(m[0], str)
                    and _HEX64.match(m[0]) and all(type(v) is int for v in m[1:])
                    and m[1] >= 0 and 0 < m[2] <= MEMBER_MAX):
                raise ValueError("bad index entry")
            entries.append((m[0], m[1], m[2]))
        out[pack] = entries
    files: dict[str, Whole] = {}
    for name, entry in doc.get("files", {}).items():
        if not (_HEX64.match(name) and isinstance(entry, dict)
                and type(entry.get("size")) is int and entry["size"] > 0
                and isinstance(entry.get("objects"), list) and entry["objects"]
                and all(isinstance(k, str) and layout.is_data_key(k)
                        for k in entry["objects"])):
            raise ValueError("bad index file entry")
        files[name] = (entry["size"], tuple(entry["objects"]))
    return out, files


def parse_directory(key: str, data: bytes, prefix: str) -> Directory:
    """Validate a directory's plaintext: pages under ``prefix``, first names strictly
    increasing; ValueError if malformed."""
    doc: Any = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != DIRECTORY_FORMAT \
            or doc.get("version") != VERSION or not isinstance(doc.get("pages"), list):
        raise ValueError("not a forge-ci index directory")
    firsts: list[str] = []
    keys: list[str] = []
    counts: list[int] = []
    for p in doc["pages"]:
        if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)
                and _HEX64.match(p[0]) and isinstance(p[1], str) and _PAGE_KEY.match(p[1])
                and p[1].startswith(prefix) and type(p[2]) is int and p[2] >= 0
                and (not firsts or p[0] > firsts[-1])):
            raise ValueError("bad index directory entry")
        firsts.append(p[0])
        keys.append(p[1])
        counts.append(p[2])
    return Directory(key, firsts, keys, counts)
