"""The file half of a snapshot: plan what must travel, then stream it up.

Plan (no writes anywhere): list the backup paths on the host, take each file's
SHA-256 from the host's hash cache or hash it there, name its object
(:func:`forge_ci.backup.layout.content_key`) and keep for upload only the files
whose object the store does not hold yet - one per distinct content.

Upload: one ``tar`` stream from the host carries exactly those files. A file is
put under the name of the hash the host reported; its bytes are hashed again as
they pass, and if they differ (the file changed since it was hashed) the put is
abandoned from inside the stream, so no object is ever published under a wrong
name. Such files are listed, hashed and sent again, up to ``rounds`` times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from forge_ci.backup import layout
from forge_ci.backup.failures import SourceChanged
from forge_ci.backup.manifest import FileEntry
from forge_ci.backup.objects import Digest, on_end
from forge_ci.backup.scan import HashCache, Stat, hash_files, list_tree
from forge_ci.backup.tarstream import Readable, read_files
from forge_ci.backup.uploader import SMALL, Uploader
from forge_ci.remote import Host

_READ = 1024 * 1024


@dataclass
class FilePlan:
    stats: dict[str, Stat]  # every entry, in listing order
    hashes: dict[str, str]  # path -> sha256 for regular files
    keys: dict[str, str]  # path -> object key for non-empty regular files
    upload: list[str]  # paths whose content the store lacks (one per object)
    skipped: list[str] = field(default_factory=list)  # sockets, fifos, devices
    hashed: int = 0  # files hashed on the host this time (cache misses)

    @property
    def files(self) -> list[Stat]:
        return [s for s in self.stats.values() if s.kind == "file"]

    def upload_bytes(self) -> int:
        return sum(self.stats[p].size for p in self.upload)

    def entries(self) -> tuple[FileEntry, ...]:
        out = []
        for s in self.stats.values():
            if s.kind == "file":
                key = self.keys.get(s.path)
                out.append(FileEntry(s.path, "file", s.mode, s.mtime_ns, s.size,
                                     self.hashes[s.path], (key,) if key else ()))
            elif s.kind in ("dir", "symlink"):
                out.append(FileEntry(s.path, s.kind, s.mode, s.mtime_ns, target=s.target))
        return tuple(out)


def plan(host: Host, root: str, paths: Iterable[str], naming_key: bytes,
         present: set[str], cache: HashCache) -> FilePlan:
    """Observe the host and the store; decide what to send. Reads only."""
    listing = list_tree(host, root, list(paths))
    result = FilePlan(stats={}, hashes={}, keys={}, upload=[])
    _absorb(result, listing, host, root, naming_key, cache)
    result.upload = missing(result, present)
    return result


def _absorb(result: FilePlan, listing: list[Stat], host: Host, root: str, naming_key: bytes,
            cache: HashCache) -> None:
    """Merge a (re-)listing into ``result``: hash what the cache lacks, name objects."""
    misses = []
    for st in listing:
        if st.kind == "other":
            result.skipped.append(st.path)
            continue
        result.stats[st.path] = st
        if st.kind == "file":
            sha = cache.lookup(st)
            if sha is None:
                misses.append(st.path)
            else:
                result.hashes[st.path] = sha
    fresh = hash_files(host, root, misses)
    result.hashed += len(fresh)
    for path in misses:
        if path in fresh:
            result.hashes[path] = fresh[path]
        else:
            del result.stats[path]  # vanished between listing and hashing
    for st in listing:
        if st.kind == "file" and st.path in result.hashes and st.size > 0:
            result.keys[st.path] = layout.content_key(naming_key, result.hashes[st.path])


def missing(result: FilePlan, present: set[str]) -> list[str]:
    """One path per object key the store lacks, in listing order."""
    wanted: set[str] = set()
    out = []
    for path, key in result.keys.items():
        if key not in present and key not in wanted:
            wanted.add(key)
            out.append(path)
    return out


class _Changed(Exception):
    """A file's bytes did not hash as planned: abandon its put."""


def upload(host: Host, root: str, result: FilePlan, naming_key: bytes, present: set[str],
           uploader: Uploader, *, rounds: int = 3,
           progress: Callable[[str], None] = lambda _m: None) -> None:
    """Send ``result.upload``; re-plan files that changed meanwhile, up to ``rounds``.

    ``present`` is updated with every object stored. On return every key in
    ``result.keys`` is in the store.
    """
    todo = list(result.upload)
    changed: list[str] = []
    for attempt in range(rounds):
        changed = _send(host, root, todo, result, uploader)
        uploader.join()
        present.update(result.keys[p] for p in todo if p not in changed)
        if changed:
            progress(f"{len(changed)} file(s) changed while being read; reading them again")
            if attempt == rounds - 1:
                break
            for path in changed:
                for table in (result.stats, result.hashes, result.keys):
                    table.pop(path, None)
            relisted = list_tree(host, root, changed, follow_start=False, allow_missing=True)
            _absorb(result, relisted, host, root, naming_key, HashCache())
        # A changed file may have been the one carrying content other paths share.
        todo = missing(result, present)
        if not todo:
            return
    raise SourceChanged(f"{len(changed)} file(s) kept changing while being backed up, "
                        f"e.g. {sorted(changed)[0]!r}",
                        hint="run the backup again when the site is quieter, or exclude "
                             "files that are rewritten constantly (logs, caches)")


def _send(host: Host, root: str, todo: list[str], result: FilePlan,
          uploader: Uploader) -> list[str]:
    """One tar pass; returns the paths that must be planned again."""
    if not todo:
        return []
    expected = set(todo)
    changed: list[str] = []
    with read_files(host, root, todo) as members:
        for name, reader in members:
            if name not in expected:
                continue  # tar never sends what it was not asked for; be strict anyway
            expected.discard(name)
            if reader is None:
                changed.append(name)
                continue
            if not _put_one(name, reader, result, uploader):
                changed.append(name)
    return changed + sorted(expected)  # missing from the stream: vanished or unreadable


def _put_one(path: str, reader: Readable, result: FilePlan, uploader: Uploader) -> bool:
    st, sha, key = result.stats[path], result.hashes[path], result.keys[path]
    if st.size <= SMALL:
        data = reader.read(SMALL + 1)
        digest = Digest()
        for _ in digest.tee([data]):
            pass
        if digest.hexdigest != sha:
            return False
        uploader.submit(key, data, name=path)
        return True
    digest = Digest()

    def check() -> None:
        if digest.hexdigest != sha:
            raise _Changed(path)

    try:
        uploader.put_stream(key, on_end(digest.tee(_chunks(reader)), check), name=path,
                            plain_size=st.size)
    except _Changed:
        return False
    return True


def _chunks(reader: Readable) -> Iterator[bytes]:
    while chunk := reader.read(_READ):
        yield chunk
