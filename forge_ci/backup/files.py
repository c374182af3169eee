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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from forge_ci._malloc import READ_SIZE
from forge_ci.backup import layout
from forge_ci.backup.errors import SourceChanged
from forge_ci.backup.index import BlobIndex, location_text
from forge_ci.backup.objects import Digest
from forge_ci.backup.pack import MEMBER_MAX, PackWriter
from forge_ci.backup.scan import HashCache, Stat, hash_files, list_tree, stat_paths
from forge_ci.backup.snapshot import FileEntry
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


@dataclass
class FilePlan:
    stats: dict[str, Stat]  # every entry, in listing order
    hashes: dict[str, str]  # path -> sha256 for regular files
    names: dict[str, str]  # path -> content name for non-empty regular files
    upload: list[str]  # paths whose content the store lacks (one per content)
    skipped: list[str] = field(default_factory=list)  # sockets, fifos, devices
    hashed: int = 0  # files hashed this time (cache misses)
    located: int = 0  # files whose stored place came from the hash cache
    lookup: list[str] = field(default_factory=list)  # names to look up in the index
    # Files hashed as they pass instead of on the host first (a first backup:
    # everything goes up anyway); named only once read.
    unhashed: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Stat]:
        return [s for s in self.stats.values() if s.kind == "file"]

    def upload_bytes(self) -> int:
        return sum(self.stats[p].size for p in self.upload if p in self.stats)

    def entries(self, index: BlobIndex) -> tuple[FileEntry, ...]:
        """Manifest entries; every content must be stored (``index`` knows where).

        Empties ``names`` as it goes (each is used once more, here): the entries
        grow while the names shrink."""
        out = []
        for s in self.stats.values():
            if s.kind == "file":
                name = self.names.pop(s.path, None)
                where = index.find(name) if name else None
                if name and where is None:
                    raise AssertionError(f"content of {s.path!r} was not stored")
                out.append(FileEntry(s.path, "file", s.mode, s.mtime_ns, s.size,
                                     self.hashes[s.path], where[0] if where else (),
                                     offset=where[1] if where else None))
            elif s.kind in ("dir", "symlink"):
                out.append(FileEntry(s.path, s.kind, s.mode, s.mtime_ns, target=s.target))
        return tuple(out)


def plan(host: Host, root: str, paths: Iterable[str], naming_key: bytes,
         index: BlobIndex, cache: HashCache, *, show: MakeProgress = silent) -> FilePlan:
    """Observe the host and the store; decide what to send. Reads only.

    ``show`` reports the hashing of files the cache does not know."""
    listing = list_tree(host, root, list(paths))
    result = FilePlan(stats={}, hashes={}, names={}, upload=[])
    # Nothing stored for these recipients yet (a first backup): every file goes up,
    # and hashing small ones on the host first would read them twice.
    first = not index.data_keys and not index.has_packed()
    _absorb(result, listing, host, root, naming_key, cache, defer_small=first,
            index=None if first else index, show=show)
    index.fetch(result.lookup)  # the index pages of the names not located by the cache
    result.lookup = []
    result.upload = missing(result, index) + result.unhashed
    return result


def _absorb(result: FilePlan, listing: list[Stat], host: Host, root: str, naming_key: bytes,
            cache: HashCache, *, defer_small: bool = False, index: BlobIndex | None = None,
            show: MakeProgress = silent) -> None:
    """Merge a (re-)listing into ``result``: hash what the cache lacks, name objects.

    With ``index``, the places the cache recorded for unchanged files (kept only when
    the cache's MAC under the naming key holds) are given to it while their objects
    are listed: those names need no index page; the others are looked up.
    Each cache entry is dropped as it is used: the cache is not held next to what
    the plan builds from it."""
    misses = []
    for st in listing:
        if st.kind == "other":
            result.skipped.append(st.path)
            continue
        result.stats[st.path] = st
        if st.kind != "file":
            continue
        hit = cache.take(st)
        if hit is None and defer_small and st.size > 0:
            result.unhashed.append(st.path)
        elif hit is None:
            misses.append(st.path)
        else:
            sha, where = hit
            result.hashes[st.path] = sha
            if index is not None and where is not None and st.size > 0:
                name = result.names[st.path] = layout.content_name(naming_key, sha)
                packed = where[1] is not None
                if (not packed or (len(where[0]) == 1 and st.size <= MEMBER_MAX)) \
                        and index.seed(name, st.size, where):
                    result.located += 1
                else:
                    result.lookup.append(name)
    fresh = _hash_in_batches(host, root, misses, result.stats, show)
    result.hashed += len(fresh)
    for path in misses:
        if path in fresh:
            result.hashes[path] = fresh[path]
        else:
            del result.stats[path]  # vanished between listing and hashing
    for st in listing:
        if st.kind == "file" and st.size > 0 and st.path in result.hashes \
                and st.path not in result.names:
            name = result.names[st.path] = layout.content_name(naming_key,
                                                                result.hashes[st.path])
            result.lookup.append(name)


def cache_records(result: FilePlan, entries: list[FileEntry]
                  ) -> Iterator[tuple[Stat, str, str | None]]:
    """What the hash cache keeps of each file of the manifest's ``entries``: its
    metadata, SHA-256 and (stored content) its place
    (:func:`forge_ci.backup.index.location_text`).

    Consumes ``entries`` and ``result``'s tables as it goes (the last thing a
    backup does): each file's objects are freed once its record is made."""
    entries.reverse()
    result.hashes.clear()  # the entries hold the same strings
    while entries:
        e = entries.pop()
        st = result.stats.pop(e.path, None) if e.type == "file" else None
        if st is None or e.sha256 is None:
            continue
        where = location_text(e.objects, e.offset) if e.objects else None
        yield st, e.sha256, where


def _hash_in_batches(host: Host, root: str, paths: list[str], stats: dict[str, Stat],
                     show: MakeProgress) -> dict[str, str]:
    fresh: dict[str, str] = {}
    total = sum(stats[p].size for p in paths)
    with show(f"hashing on {host.name}", files=len(paths), nbytes=total) as shown:
        batch: list[str] = []
        size = 0
        for i, path in enumerate(paths):
            batch.append(path)
            size += stats[path].size
            if (size >= _HASH_BATCH_BYTES or len(batch) >= _HASH_BATCH_FILES
                    or i == len(paths) - 1):
                fresh.update(hash_files(host, root, batch))
                shown.advance(len(batch), size)
                batch, size = [], 0
    return fresh


def missing(result: FilePlan, index: BlobIndex) -> list[str]:
    """One path per content the store lacks, in listing order."""
    wanted: set[str] = set()
    out = []
    for path, name in result.names.items():
        if name not in wanted and name not in index:
            wanted.add(name)
            out.append(path)
    return out


def upload(host: Host, root: str, result: FilePlan, naming_key: bytes, index: BlobIndex,
           uploader: Uploader, packer: PackWriter, *, rounds: int = 3,
           progress: Callable[[str], None] = lambda _m: None,
           show: MakeProgress = silent) -> None:
    """Send ``result.upload``; re-plan files that changed meanwhile, up to ``rounds``.

    ``index`` learns every content stored. On return every name in ``result.names``
    is found in it. ``progress`` gets messages, ``show`` the files read so far.
    """
    todo = list(result.upload)
    changed: list[str] = []
    for attempt in range(rounds):
        total = sum(result.stats[p].size for p in todo if p in result.stats)
        with show("uploading", files=len(todo), nbytes=total) as shown:
            changed = _send(host, root, todo, result, uploader, packer, index,
                            naming_key, shown)
        packer.flush()
        uploader.join()
        if result.unhashed:
            # Read without a hash to compare with: a file rewritten while tar read it
            # (same size) shows in its metadata. Such files go round again, hashed.
            again = set(changed)
            changed += _moved(host, root, result, [p for p in result.unhashed
                                                   if p in result.hashes and p not in again])
            result.unhashed = []
        index.stored(packer.keys())  # packs and large files' segments: confirmed
        uploader.discard(packer.unwanted)
        packer.unwanted.clear()
        if changed:
            progress(f"{len(changed)} file(s) changed while being read; reading them again")
            if attempt == rounds - 1:
                break
            for path in changed:
                for table in (result.stats, result.hashes, result.names):
                    table.pop(path, None)
            relisted = stat_paths(host, root, changed)
            _absorb(result, relisted, host, root, naming_key, HashCache(), show=show)
            index.fetch(result.lookup)
            result.lookup = []
        # A changed file may have been the one carrying content other paths share.
        todo = missing(result, index)
        if not todo:
            return
    raise SourceChanged(f"{len(changed)} file(s) kept changing while being backed up, "
                        f"e.g. {sorted(changed)[0]!r}",
                        hint="run the backup again when the site is quieter, or exclude "
                             "files that are rewritten constantly (logs, caches)")


def _moved(host: Host, root: str, result: FilePlan, paths: list[str], *,
           batch: int = _STAT_BATCH) -> list[str]:
    """Paths whose metadata differs from the listing (or that are gone). Asked in
    batches, so a second listing of the whole tree is never held at once."""
    todo = sorted(paths)
    out = []
    for i in range(0, len(todo), batch):
        part = todo[i:i + batch]
        now = {st.path: st.cache_key() for st in stat_paths(host, root, part)}
        out += [p for p in part if now.get(p) != result.stats[p].cache_key()]
    return out


def _send(host: Host, root: str, todo: list[str], result: FilePlan,
          uploader: Uploader, packer: PackWriter, index: BlobIndex, naming_key: bytes,
          shown: Progress | None = None) -> list[str]:
    """One tar pass; returns the paths that must be planned again. The paths without
    a hash yet (a first backup's) are named as they pass.

    tar sends the files in the order asked, leaving out those it cannot read: the
    members are matched against ``todo`` in order (no set of every path)."""
    if not todo:
        return []
    met = 0  # todo[:met] were sent or skipped by tar
    changed: list[str] = []
    with read_files(host, root, todo) as members:
        for name, reader in members:
            if met < len(todo) and todo[met] == name:
                met += 1
            else:
                at = _find(todo, name, met)
                if at < 0:
                    continue  # tar never sends what it was not asked for; be strict anyway
                changed += todo[met:at]  # left out: vanished or unreadable
                met = at + 1
            if reader is None:
                changed.append(name)
                continue
            if name not in result.hashes:
                if not _put_unhashed(name, reader, result, uploader, packer, index,
                                     naming_key):
                    changed.append(name)
            elif not _put_one(name, reader, result, uploader, packer, index):
                changed.append(name)
            if shown is not None and name in result.stats:
                shown.advance(1, result.stats[name].size)
    return changed + todo[met:]  # missing from the stream: vanished or unreadable


def _find(todo: list[str], name: str, start: int) -> int:
    try:
        return todo.index(name, start)
    except ValueError:
        return -1


def _put_unhashed(path: str, reader: Readable, result: FilePlan, uploader: Uploader,
                  packer: PackWriter, index: BlobIndex, naming_key: bytes) -> bool:
    """Hash a file as it passes and name it then: a small one is packed unless its
    content is stored already; a large one goes up under a random key, which the
    index maps its content name to."""
    st = result.stats[path]
    path = st.path  # the listing's string: tar's own copy of the name is not kept
    if st.size > MEMBER_MAX:
        digest = Digest()
        keys = packer.segments(digest.tee(_chunks(reader)), path=path)
        if digest.size != st.size:
            packer.unwanted += keys
            return False
        name = layout.content_name(naming_key, digest.hexdigest)
        result.hashes[path], result.names[path] = digest.hexdigest, name
        result.hashed += 1
        packer.record_file(name, st.size, keys)
        index.add_whole(name, st.size, keys)
        return True
    data = reader.read(MEMBER_MAX + 1)
    if len(data) != st.size:
        return False
    sha = hashlib.sha256(data).hexdigest()
    name = layout.content_name(naming_key, sha)
    result.hashes[path], result.names[path] = sha, name
    result.hashed += 1
    if not index.knows(name):  # stored, or packed earlier in this run
        pack, offset = packer.add(name, data, path=path)
        index.add_packed(name, pack, offset, len(data))
    return True


def _put_one(path: str, reader: Readable, result: FilePlan, uploader: Uploader,
             packer: PackWriter, index: BlobIndex) -> bool:
    st, sha, name = result.stats[path], result.hashes[path], result.names[path]
    if st.size <= MEMBER_MAX:
        data = reader.read(MEMBER_MAX + 1)
        if len(data) != st.size or hashlib.sha256(data).hexdigest() != sha:
            return False
        pack, offset = packer.add(name, data, path=path)
        index.add_packed(name, pack, offset, len(data))
        return True
    digest = Digest()
    keys = packer.segments(digest.tee(_chunks(reader)), path=path)
    if digest.size != st.size or digest.hexdigest != sha:
        packer.unwanted += keys  # deleted once stored: nothing may name them
        return False
    packer.record_file(name, st.size, keys)
    index.add_whole(name, st.size, keys)
    return True


def _chunks(reader: Readable) -> Iterator[bytes]:
    while chunk := reader.read(READ_SIZE):
        yield chunk
