"""Where stored content lives: alone under its name, or inside a pack.

The dedup index of a backup is two things it can read without the identity:

* the ``data/`` listing: content stored alone is ``data/<name[:2]>/<name>``;
* ``index/<tag>/`` objects: JSON ``{"format": "forge-ci index", "version": 1,
  "packs": {"<pack key>": [["<name>", offset, size], ...]},
  "files": {"<name>": {"size": N, "objects": ["<key>", ...]}}}`` - small contents in
  packs, large ones as consecutive whole objects (segments) - age-encrypted to an
  X25519 key derived from the naming key (:func:`forge_ci.backup.layout.index_secret`),
  so whoever holds the recipients - and only they - can read them (and to the
  recipients themselves, so the identity opens them like every other object).

An index entry counts only while its pack is listed: prune deletes packs no snapshot
references and never rewrites an index, so stale entries are skipped here. Each
backup that packed something writes one index object (before its manifest); when
``CONSOLIDATE`` of them have piled up, it writes one merged index of the live
entries instead and deletes the ones it merged. Losing an index object costs only
re-uploads: restore never reads the index (manifests name packs and offsets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from forge_ci.backup import layout
from forge_ci.backup.format.age import Recipient
from forge_ci.backup.format.keys import X25519Identity
from forge_ci.backup.objects import seal, unseal
from forge_ci.backup.pack import MEMBER_MAX, Member
from forge_ci.backup.repo import Repository
from forge_ci.errors import BackupError, StoreError

FORMAT = "forge-ci index"
VERSION = 1
CONSOLIDATE = 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Location = tuple[tuple[str, ...], int | None]  # objects, offset (None: whole objects)
Entry = tuple[str, int, int]  # pack key, offset, size


# A packed member's place, as one int: pack number << 64 | offset << 24 | size
# (size <= MEMBER_MAX < 2**24; offset < 2**40, far beyond a pack's plaintext).
_SIZE_BITS, _OFFSET_BITS = 24, 40
_SIZE_MASK, _OFFSET_MASK = (1 << _SIZE_BITS) - 1, (1 << _OFFSET_BITS) - 1


@dataclass
class BlobIndex:
    """Content name -> where it is stored, for contents whose object is present.

    Held compactly, since a media library has one entry per file: names as their 32
    raw bytes, a packed member's place as one int with its pack as a number (each
    pack key is held once), instead of a tuple of strings per entry."""

    data_keys: set[str]
    whole: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # size, keys
    index_keys: list[str] = field(default_factory=list)  # index objects read
    unreadable: int = 0
    _packed: dict[bytes, int] = field(default_factory=dict, repr=False)
    _packs: list[str] = field(default_factory=list, repr=False)
    _pack_no: dict[str, int] = field(default_factory=dict, repr=False)
    _pack_keys: list[tuple[str]] = field(default_factory=list, repr=False)  # what find gives

    @property
    def packed(self) -> Iterator[str]:
        """The names of packed contents (present or queued)."""
        return (name.hex() for name in self._packed)

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

    def lookup_packed(self, name: str) -> Entry | None:
        """Where a packed content is (stored or queued), or None."""
        place = self._packed.get(bytes.fromhex(name))
        return None if place is None else self._unplace(place)

    def find(self, name: str) -> Location | None:
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
            self._packed[bytes.fromhex(name)] = self._place(key, offset, size)

    def load_packed(self, name: str, key: str, offset: int, size: int) -> None:
        """Record a member an index object names (its pack is listed); first wins."""
        raw = bytes.fromhex(name)
        if raw not in self._packed:
            self._packed[raw] = self._place(key, offset, size)

    def add_whole(self, name: str, size: int, keys: tuple[str, ...]) -> None:
        """Record a content queued as segments; found once every key is ``stored``."""
        if name not in self:
            self.whole[name] = (size, keys)

    def stored(self, keys: Iterable[str]) -> None:
        self.data_keys.update(keys)


def _identity(repo: Repository) -> X25519Identity:
    return X25519Identity(layout.index_secret(repo.naming_key()))


def load(repo: Repository, data_keys: set[str], *, workers: int = 8) -> BlobIndex:
    """Read every index object of this recipient set (in parallel)."""
    index = BlobIndex(set(data_keys))
    keys = [k for k in repo.store.list(layout.index_prefix(repo.naming_key()))
            if layout.is_index_key(k)]
    if not keys:
        return index
    identity = _identity(repo)

    def read(key: str) -> Parsed | None:
        try:
            return parse(b"".join(unseal(repo.store.get(key), [identity])))
        except (BackupError, StoreError, ValueError):
            return None  # gone meanwhile or damaged: its contents are uploaded again

    with ThreadPoolExecutor(max_workers=min(workers, len(keys)),
                            thread_name_prefix="forge-index") as pool:
        for key, parsed in zip(keys, pool.map(read, keys), strict=True):
            if parsed is None:
                index.unreadable += 1
                continue
            index.index_keys.append(key)
            packs, files = parsed
            for pack, members in packs.items():
                if pack not in index.data_keys:
                    continue  # pruned
                for name, offset, size in members:
                    index.load_packed(name, pack, offset, size)
            for name, (size, segments) in files.items():
                if all(k in index.data_keys for k in segments):
                    index.whole.setdefault(name, (size, segments))
    return index


def save(repo: Repository, index: BlobIndex, new: Mapping[str, list[Member]],
         new_files: Mapping[str, tuple[int, tuple[str, ...]]] | None = None, *,
         consolidate: int = CONSOLIDATE) -> int:
    """Write this run's index object (or a merged one); returns index objects deleted."""
    files = dict(new_files or {})
    if not new and not files:
        return 0
    merge = len(index.index_keys) + 1 >= consolidate
    packs: dict[str, list[Member]] = {k: list(v) for k, v in new.items()}
    if merge:
        for name, pack, offset, size in index.packed_entries():
            if pack in index.data_keys and pack not in new:
                packs.setdefault(pack, []).append((name, offset, size))
        for name, (size, segments) in index.whole.items():
            if all(k in index.data_keys for k in segments):
                files.setdefault(name, (size, segments))
    body = dumps(packs, files)
    # To the recipients too, so `age -d` with the real identity opens it like any object.
    recipients: list[Recipient] = [_identity(repo).recipient, *repo.recipients]
    repo.store.put(layout.new_index_key(repo.naming_key()),
                   seal([body], recipients, mode="compress"))
    if not merge:
        return 0
    for key in index.index_keys:
        repo.store.delete(key)
    return len(index.index_keys)


def dumps(packs: Mapping[str, list[Member]],
          files: Mapping[str, tuple[int, tuple[str, ...]]] | None = None) -> bytes:
    doc = {"format": FORMAT, "version": VERSION,
           "packs": {k: [list(m) for m in sorted(v, key=lambda m: m[1])]
                     for k, v in sorted(packs.items())},
           "files": {name: {"size": size, "objects": list(keys)}
                     for name, (size, keys) in sorted((files or {}).items())}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


Parsed = tuple[dict[str, list[Member]], dict[str, tuple[int, tuple[str, ...]]]]


def parse(data: bytes) -> Parsed:
    """Validate an index object's plaintext; ValueError if it is malformed."""
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
    files: dict[str, tuple[int, tuple[str, ...]]] = {}
    for name, entry in doc.get("files", {}).items():
        if not (_HEX64.match(name) and isinstance(entry, dict)
                and type(entry.get("size")) is int and entry["size"] > 0
                and isinstance(entry.get("objects"), list) and entry["objects"]
                and all(isinstance(k, str) and layout.is_data_key(k)
                        for k in entry["objects"])):
            raise ValueError("bad index file entry")
        files[name] = (entry["size"], tuple(entry["objects"]))
    return out, files
