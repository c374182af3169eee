"""The file half of a snapshot: plan what must travel, then stream it up.

Plan (no writes anywhere): list the backup paths on the host, take each file's
SHA-256 from the host's hash cache or hash it there, name its content
(:func:`forge_ci.backup.layout.content_name`) and keep for upload only the files
whose content the store does not hold yet (:class:`forge_ci.backup.index.BlobIndex`)
- one per distinct content.

Upload: one ``tar`` stream from the host carries exactly those files. Small ones go
into packs (:mod:`forge_ci.backup.pack`), large ones into objects of their own. A
file's bytes are hashed again as they pass, and if they differ from the hash the
host reported (the file changed since) the content is not packed, or its put is
abandoned from inside the stream: nothing is ever stored under a wrong name. Such
files are listed, hashed and sent again, up to ``rounds`` times.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, overload

from forge_ci._malloc import READ_SIZE
from forge_ci.backup import layout
from forge_ci.backup.errors import SourceChanged
from forge_ci.backup.index import BlobIndex, location_text
from forge_ci.backup.objects import Digest
from forge_ci.backup.pack import MEMBER_MAX, PackWriter
from forge_ci.backup.scan import (
    HashCache,
    Listing,
    Stat,
    hash_files,
    list_columns,
    stat_columns,
    stat_paths,
)
from forge_ci.backup.snapshot import EntryView, FileEntry
from forge_ci.backup.tarstream import Readable, read_files
from forge_ci.backup.uploader import Uploader
from forge_ci.progress import MakeProgress, Progress, silent
from forge_ci.remote import Host

# Files hashed on the host per command: each batch is one round trip, and the
# progress line moves once per batch.
_HASH_BATCH_BYTES = 256 * 1024 * 1024
_HASH_BATCH_FILES = 2000
# Files whose metadata is checked again per command (after a first backup's upload).
_STAT_BATCH = 5000
Rows: TypeAlias = "array[int]"  # of "i": listing rows


def row_array(values: Iterable[int] = ()) -> Rows:
    """Listing rows as 4-byte machine integers (an int object each would cost 28 bytes
    more, an "l" 4 more)."""
    return array("i", values)


class Digests:
    """A 32-byte digest per listing row, all in one ``bytearray`` (given and taken
    as hex): no string and no dict entry per file."""

    def __init__(self, rows: int) -> None:
        self._raw = bytearray(32 * rows)
        self._set = bytearray(rows)

    def __contains__(self, row: int) -> bool:
        return bool(self._set[row])

    def __setitem__(self, row: int, hexdigest: str) -> None:
        self._raw[row * 32:row * 32 + 32] = bytes.fromhex(hexdigest)
        self._set[row] = 1

    def get(self, row: int) -> str | None:
        return self._raw[row * 32:row * 32 + 32].hex() if self._set[row] else None

    def __getitem__(self, row: int) -> str:
        if not self._set[row]:
            raise KeyError(row)
        return self._raw[row * 32:row * 32 + 32].hex()

    def discard(self, row: int) -> None:
        self._set[row] = 0

    def clear(self) -> None:
        self._raw, self._set = bytearray(), bytearray()


@dataclass
class FilePlan:
    """What a backup sends and records, by row of ``listing`` (find order)."""

    listing: Listing  # every entry; sockets, fifos and devices dropped (``skipped``)
    hashes: Digests  # sha256 of regular files
    names: Digests  # content names of non-empty regular files
    upload: Rows = field(default_factory=row_array)  # contents the store lacks
    skipped: list[str] = field(default_factory=list)  # sockets, fifos, devices
    hashed: int = 0  # files hashed this time (cache misses)
    located: int = 0  # files whose stored place came from the hash cache
    lookup: list[str] = field(default_factory=list)  # names to look up in the index
    # Files hashed as they pass instead of on the host first (a first backup:
    # everything goes up anyway); named only once read.
    unhashed: Rows = field(default_factory=row_array)

    @classmethod
    def of(cls, listing: Listing) -> FilePlan:
        return cls(listing, Digests(len(listing)), Digests(len(listing)))

    def file_rows(self) -> Iterator[int]:
        return (row for row in range(len(self.listing)) if self.listing.is_file(row))

    def file_count(self) -> int:
        return sum(1 for _ in self.file_rows())

    def file_bytes(self) -> int:
        return sum(self.listing.size(row) for row in self.file_rows())

    def upload_bytes(self) -> int:
        return sum(self.listing.size(row) for row in self.upload)

    def links(self) -> Iterator[FileEntry]:
        """The manifest entries of the symlinks."""
        listing = self.listing
        for row in range(len(listing)):
            if listing.kind(row) == "symlink":
                yield FileEntry(listing.path(row), "symlink", listing.mode(row),
                                listing.mtime_ns(row), target=listing.target(row))

    def entries(self, index: BlobIndex, leave_out: Iterable[str] = ()) -> PlanEntries:
        """Manifest entries (every content must be stored: ``index`` knows where),
        made as they are read, not held."""
        return PlanEntries(self, index, frozenset(leave_out))


class PlanEntries(EntryView):
    """A plan's manifest entries, in listing order, each made when read from the
    plan's columns and the index (iterated twice to save a signed manifest)."""

    def __init__(self, plan: FilePlan, index: BlobIndex, leave_out: frozenset[str]) -> None:
        self._plan, self._index, self._leave_out = plan, index, leave_out
        listing = plan.listing
        self._rows = row_array(row for row in range(len(listing))
                           if listing.kind(row) in ("file", "dir", "symlink")
                           and not (leave_out and listing.path(row) in leave_out))

    def __len__(self) -> int:
        return len(self._rows)

    def _make(self, i: int) -> FileEntry:
        row = self._rows[i]
        plan, listing = self._plan, self._plan.listing
        path, kind = listing.path(row), listing.kind(row)
        if kind == "file":
            name = plan.names.get(row)
            where = self._index.find(name) if name else None
            if name and where is None:
                raise AssertionError(f"content of {path!r} was not stored")
            return FileEntry(path, "file", listing.mode(row), listing.mtime_ns(row),
                             listing.size(row), plan.hashes[row], where[0] if where else (),
                             offset=where[1] if where else None)
        assert kind in ("dir", "symlink")
        return FileEntry(path, kind, listing.mode(row), listing.mtime_ns(row),
                         target=listing.target(row))


def plan(host: Host, root: str, paths: Iterable[str], naming_key: bytes,
         index: BlobIndex, cache: HashCache, *, show: MakeProgress = silent) -> FilePlan:
    """Observe the host and the store; decide what to send. Reads only.

    ``show`` reports the hashing of files the cache does not know."""
    result = FilePlan.of(list_columns(host, root, list(paths)))
    # Nothing stored for these recipients yet (a first backup): every file goes up,
    # and hashing small ones on the host first would read them twice.
    first = not index.data_keys and not index.has_packed()
    _absorb(result, range(len(result.listing)), host, root, naming_key, cache,
            defer_small=first, index=None if first else index, show=show)
    index.fetch(result.lookup)  # the index pages of the names not located by the cache
    result.lookup = []
    lacking = missing(result, index)
    # A first backup's: every file, as in ``unhashed`` (neither list changes in place).
    result.upload = lacking + result.unhashed if lacking else result.unhashed
    return result


def _absorb(result: FilePlan, rows: Iterable[int], host: Host, root: str, naming_key: bytes,
            cache: HashCache, *, defer_small: bool = False, index: BlobIndex | None = None,
            show: MakeProgress = silent) -> None:
    """Take ``rows`` of ``result.listing`` into the plan: hash what the cache lacks,
    name contents.

    With ``index``, the places the cache recorded for unchanged files (kept only when
    the cache's MAC under the naming key holds) are given to it while their objects
    are listed: those names need no index page; the others are looked up.
    Each cache entry is dropped as it is used: the cache is not held next to what
    the plan builds from it."""
    listing = result.listing
    misses = []
    for row in rows:
        kind = listing.kind(row)
        if kind == "other":
            result.skipped.append(listing.path(row))
            listing.drop(row)
            continue
        if kind != "file":
            continue
        size = listing.size(row)
        hit = cache.take(listing.stat(row)) if cache else None  # none: a first backup
        if hit is None and defer_small and size > 0:
            result.unhashed.append(row)
        elif hit is None:
            misses.append(row)
        else:
            sha, where = hit
            result.hashes[row] = sha
            if size == 0:
                continue
            name = layout.content_name(naming_key, sha)
            result.names[row] = name
            if index is not None and where is not None \
                    and (where[1] is None or (len(where[0]) == 1 and size <= MEMBER_MAX)) \
                    and index.seed(name, size, where):
                result.located += 1
            else:
                result.lookup.append(name)
    _hash_in_batches(host, root, misses, result, show)
    for row in misses:
        if row not in result.hashes:
            listing.drop(row)  # vanished between listing and hashing
        elif listing.size(row) > 0 and row not in result.names:
            name = layout.content_name(naming_key, result.hashes[row])
            result.names[row] = name
            result.lookup.append(name)


def cache_records(result: FilePlan, index: BlobIndex
                  ) -> Iterator[tuple[Stat, str, str | None]]:
    """What the hash cache keeps of each file the snapshot holds: its metadata,
    SHA-256 and (stored content) its place
    (:func:`forge_ci.backup.index.location_text`)."""
    listing = result.listing
    for row in result.file_rows():
        sha = result.hashes.get(row)
        if sha is None:
            continue
        name = result.names.get(row)
        where = index.find(name) if name else None
        yield listing.stat(row), sha, location_text(*where) if where else None


def _hash_in_batches(host: Host, root: str, rows: list[int], result: FilePlan,
                     show: MakeProgress) -> None:
    """Hash ``rows`` on the host, a batch per command, into ``result.hashes``."""
    listing = result.listing
    total = sum(listing.size(row) for row in rows)
    hashed = 0
    with show(f"hashing on {host.name}", files=len(rows), nbytes=total) as shown:
        batch: dict[str, int] = {}
        size = 0
        for i, row in enumerate(rows):
            batch[listing.path(row)] = row
            size += listing.size(row)
            if (size >= _HASH_BATCH_BYTES or len(batch) >= _HASH_BATCH_FILES
                    or i == len(rows) - 1):
                for path, sha in hash_files(host, root, batch).items():
                    if path in batch:
                        result.hashes[batch[path]] = sha
                        hashed += 1
                shown.advance(len(batch), size)
                batch, size = {}, 0
    result.hashed += hashed


def missing(result: FilePlan, index: BlobIndex) -> Rows:
    """One row per content the store lacks, in listing order."""
    wanted: set[str] = set()
    out = row_array()
    for row in result.file_rows():
        name = result.names.get(row)
        if name is not None and name not in wanted and name not in index:
            wanted.add(name)
            out.append(row)
    return out


def upload(host: Host, root: str, result: FilePlan, naming_key: bytes, index: BlobIndex,
           uploader: Uploader, packer: PackWriter, *, rounds: int = 3,
           progress: Callable[[str], None] = lambda _m: None,
           show: MakeProgress = silent) -> None:
    """Send ``result.upload``; re-plan files that changed meanwhile, up to ``rounds``.

    ``index`` learns every content stored. On return every name in ``result.names``
    is found in it. ``progress`` gets messages, ``show`` the files read so far.
    """
    listing = result.listing
    todo = result.upload  # replaced, never changed in place
    changed: list[int] = []
    for attempt in range(rounds):
        total = sum(listing.size(row) for row in todo)
        with show("uploading", files=len(todo), nbytes=total) as shown:
            changed = _send(host, root, todo, result, uploader, packer, index,
                            naming_key, shown)
        packer.flush()
        uploader.join()
        if result.unhashed:
            # Read without a hash to compare with: a file rewritten while tar read it
            # (same size) shows in its metadata. Such files go round again, hashed.
            again = set(changed)
            changed += _moved(host, root, result, row_array(
                row for row in result.unhashed if row in result.hashes and row not in again))
            result.unhashed = row_array()
        index.stored(packer.keys())  # packs and large files' segments: confirmed
        uploader.discard(packer.unwanted)
        packer.unwanted.clear()
        if changed:
            progress(f"{len(changed)} file(s) changed while being read; reading them again")
            if attempt == rounds - 1:
                break
            rows = {listing.path(row): row for row in changed}
            for row in changed:
                result.hashes.discard(row)
                result.names.discard(row)
                listing.drop(row)
            for st in stat_paths(host, root, rows):
                listing.update(rows[st.path], st)
            _absorb(result, sorted(rows.values()), host, root, naming_key, HashCache(),
                    show=show)
            index.fetch(result.lookup)
            result.lookup = []
        # A changed file may have been the one carrying content other paths share.
        todo = missing(result, index)
        if not todo:
            return
    raise SourceChanged(f"{len(changed)} file(s) kept changing while being backed up, "
                        f"e.g. {sorted(listing.path(row) for row in changed)[0]!r}",
                        hint="run the backup again when the site is quieter, or exclude "
                             "files that are rewritten constantly (logs, caches)")


def _moved(host: Host, root: str, result: FilePlan, rows: Rows, *,
           batch: int = _STAT_BATCH) -> list[int]:
    """Rows whose metadata differs from the listing (or that are gone), by path.
    Asked in batches, each stated into columns and matched in order, so neither a
    second listing of the whole tree nor an object per file is ever held."""
    listing = result.listing
    out: list[int] = []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        out += _differing(listing, part,
                          stat_columns(host, root, (listing.path_bytes(row) for row in part)))
    return sorted(out, key=listing.path)


def _differing(listing: Listing, rows: Rows, now: Listing) -> list[int]:
    """Of ``rows``, those ``now`` lacks or states otherwise. ``now`` lists them in the
    order asked, leaving out the gone; matched by path should it ever not."""
    out = []
    at = 0
    for row in rows:
        if at < len(now) and now.path_bytes(at) == listing.path_bytes(row):
            if not listing.same_meta(row, now, at):
                out.append(row)
            at += 1
        else:
            out.append(row)  # gone
    if at == len(now):
        return out
    found = {now.path_bytes(k): k for k in range(len(now))}
    out = []
    for row in rows:
        k = found.get(listing.path_bytes(row))
        if k is None or not listing.same_meta(row, now, k):
            out.append(row)
    return out


def _send(host: Host, root: str, todo: Rows, result: FilePlan,
          uploader: Uploader, packer: PackWriter, index: BlobIndex, naming_key: bytes,
          shown: Progress | None = None) -> list[int]:
    """One tar pass over the files of rows ``todo``; returns the rows that must be
    planned again. The files without a hash yet (a first backup's) are named as
    they pass.

    tar sends the files in the order asked, leaving out those it cannot read: the
    members are matched against ``todo`` in order (no set of every path)."""
    if not todo:
        return []
    paths = _RowPaths(result.listing, todo)
    met = 0  # todo[:met] were sent or skipped by tar
    changed: list[int] = []
    with read_files(host, root, paths) as members:
        for name, reader in members:
            if met < len(todo) and paths[met] == name:
                met += 1
            else:
                at = _find(paths, name, met)
                if at < 0:
                    continue  # tar never sends what it was not asked for; be strict anyway
                changed.extend(todo[met:at])  # left out: vanished or unreadable
                met = at + 1
            row = todo[met - 1]
            if reader is None:
                changed.append(row)
                continue
            if row not in result.hashes:
                if not _put_unhashed(row, reader, result, uploader, packer, index,
                                     naming_key):
                    changed.append(row)
            elif not _put_one(row, reader, result, uploader, packer, index):
                changed.append(row)
            if shown is not None:
                shown.advance(1, result.listing.size(row))
    return changed + todo[met:].tolist()  # missing from the stream: vanished or unreadable


class _RowPaths(Sequence[str]):
    """The paths of ``rows`` of a listing, decoded when read (not held: tar's names
    go a piece at a time)."""

    def __init__(self, listing: Listing, rows: Rows) -> None:
        self._listing, self._rows = listing, rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...

    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self._listing.path(row) for row in self._rows[i]]
        return self._listing.path(self._rows[i])


def _find(paths: Sequence[str], name: str, start: int) -> int:
    for at in range(start, len(paths)):
        if paths[at] == name:
            return at
    return -1


def _put_unhashed(row: int, reader: Readable, result: FilePlan, uploader: Uploader,
                  packer: PackWriter, index: BlobIndex, naming_key: bytes) -> bool:
    """Hash a file as it passes and name it then: a small one is packed unless its
    content is stored already; a large one goes up under a random key, which the
    index maps its content name to."""
    size, path = result.listing.size(row), result.listing.path(row)
    if size > MEMBER_MAX:
        digest = Digest()
        keys = packer.segments(digest.tee(_chunks(reader)), path=path)
        if digest.size != size:
            packer.unwanted += keys
            return False
        name = layout.content_name(naming_key, digest.hexdigest)
        result.hashes[row], result.names[row] = digest.hexdigest, name
        result.hashed += 1
        packer.record_file(name, size, keys)
        index.add_whole(name, size, keys)
        return True
    data = reader.read(size + 1)  # not MEMBER_MAX + 1: that buffer would be allocated
    if len(data) != size:
        return False
    sha = hashlib.sha256(data).hexdigest()
    name = layout.content_name(naming_key, sha)
    result.hashes[row], result.names[row] = sha, name
    result.hashed += 1
    if not index.knows(name):  # stored, or packed earlier in this run
        pack, offset = packer.add(name, data, path=path)
        index.add_packed(name, pack, offset, len(data))
    return True


def _put_one(row: int, reader: Readable, result: FilePlan, uploader: Uploader,
             packer: PackWriter, index: BlobIndex) -> bool:
    size, path = result.listing.size(row), result.listing.path(row)
    sha, name = result.hashes[row], result.names[row]
    if size <= MEMBER_MAX:
        data = reader.read(size + 1)  # one more: a file grown since shows
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            return False
        pack, offset = packer.add(name, data, path=path)
        index.add_packed(name, pack, offset, len(data))
        return True
    digest = Digest()
    keys = packer.segments(digest.tee(_chunks(reader)), path=path)
    if digest.size != size or digest.hexdigest != sha:
        packer.unwanted += keys  # deleted once stored: nothing may name them
        return False
    packer.record_file(name, size, keys)
    index.add_whole(name, size, keys)
    return True


def _chunks(reader: Readable) -> Iterator[bytes]:
    while chunk := reader.read(READ_SIZE):
        yield chunk
