"""Restore a snapshot: nothing live changes until everything has authenticated.

Order of operations:

1. The manifest is decrypted, its signature checked against forge.yml's pinned
   signers (:meth:`Repository.open_manifest`) and its paths checked for hostile
   entries (``snapshot.parse``). :func:`plan_restore` then refuses any path outside
   the environment's ``backup.paths`` and anything deploy owns (``current``,
   ``releases``, ``.forge``, the preview link) - before anything is written.
2. Database: the dump object's *ciphertext* is downloaded to an anonymous temporary
   file on the runner (``tempfile.TemporaryFile``: no name, removed on close; it
   holds only age ciphertext), then decrypted once in full to check the age
   authentication to the final chunk, the zstd frames, the SHA-256, the size and
   the ``-- Dump completed`` trailer. Only then is it decrypted a second time, from
   the same local bytes (no second download that could differ), into ``mariadb``.
3. Files: streamed as a tar into a staging directory on the host (on the local
   target: written there directly, :mod:`forge_ci.backup.localtree`). Each file's
   bytes are checked against the manifest as they pass; any failure kills the
   extraction and removes the staging directory. Modes and nanosecond mtimes travel
   in the tar.
4. Only when steps 2 and 3 succeeded: the dump is imported, then each backup path is
   swapped for its staged copy with two renames (the old tree is set aside, then
   deleted). A drill (``--to-dir``) moves the staged tree to the empty target instead.

Setuid, setgid and sticky bits are never restored. A restore over live data runs
under the deploy lock of every host (the caller takes it), so deploys and other
restores wait or fail instead of interleaving.

A dump imported over the live database replaces the tables the dump contains
(``DROP TABLE IF EXISTS`` + ``CREATE``); tables created after the snapshot are left.
"""

from __future__ import annotations

import itertools
import mmap
import os
import posixpath
import tarfile
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import IO, Generic, Literal, TypeVar

from forge_ci._malloc import READ_SIZE
from forge_ci.backup.dump import check_database_name, has_trailer, import_database
from forge_ci.backup.errors import BackupFormatError, DumpError, RestoreRefused
from forge_ci.backup.format.age import CHUNK_SIZE, PlaintextTooLarge, decrypt_into
from forge_ci.backup.format.zstd import decompress_pieces
from forge_ci.backup.localtree import NewTree
from forge_ci.backup.objects import Digest, checked, unseal
from forge_ci.backup.pack import MEMBER_MAX, OLD_SEGMENT, SEGMENT, TARGET, read_members
from forge_ci.backup.repo import Repository, SnapshotRef
from forge_ci.backup.snapshot import DatabaseEntry, FileEntry, FileTable, Manifest
from forge_ci.backup.tarstream import tar_info, write_tree
from forge_ci.config.backup import DEPLOY_OWNED, BackupConfig
from forge_ci.errors import ForgeError
from forge_ci.progress import MakeProgress, Progress, silent
from forge_ci.remote import Host, LocalHost, sh
from forge_ci.units import human_size

Only = Literal["database", "files"]
# A checked file's content to disk (views: stored content straight from decryption).
Write = Callable[[FileEntry, Iterable[bytes | memoryview]], None]
_B = TypeVar("_B", bytearray, memoryview)
_DRILL_STAGING = ".forge-restore-"  # in a drill's target: <to-dir>/.forge-restore-<random>


@dataclass(frozen=True)
class RestorePlan:
    ref: SnapshotRef
    manifest: Manifest
    root: str
    database: str | None = None  # target database name, None: not restored
    database_live: bool = False
    files_dest: str | None = None  # directory the snapshot's paths land under
    files_live: bool = False

    def live_targets(self) -> list[str]:
        out = []
        if self.database and self.database_live:
            out.append(f"database {self.database}")
        if self.files_dest and self.files_live:
            out += [f"{self.root}/{p}" for p in self.manifest.paths]
        return out

    def as_dict(self) -> dict[str, object]:
        table = FileTable.of(self.manifest.files)
        files = [i for i in range(len(table)) if table.kind(i) == "file"]
        return {
            "snapshot": self.ref.id, "time": self.manifest.time.isoformat(),
            "database": self.database, "database_live": self.database_live,
            "files_dest": self.files_dest, "files_live": self.files_live,
            "files": len(files) if self.files_dest else 0,
            "bytes": sum(table.size(i) for i in files) if self.files_dest else 0,
            "overwrites": self.live_targets(),
        }

    def describe(self) -> str:
        d = self.as_dict()
        lines = [f"snapshot {self.ref.id} ({d['time']})"]
        if self.database:
            where = "over the LIVE database" if self.database_live else "as a drill"
            lines.append(f"  database -> {self.database} ({where})")
        if self.files_dest:
            where = "over the LIVE paths" if self.files_live else "as a drill"
            size = human_size(int(str(d["bytes"])))
            lines.append(f"  {d['files']} files, {size} -> {self.files_dest} ({where})")
            verb = "replaces" if self.files_live else "creates"
            lines += [f"    {verb} {self.files_dest}/{p}" for p in self.manifest.paths]
        return "\n".join(lines)


def check_paths(manifest: Manifest, cfg: BackupConfig, preview_link: str | None) -> None:
    """Restore only where backups belong: inside ``backup.paths``, never in what
    deploy owns. (Every entry lies under ``manifest.paths``: ``snapshot.parse``.)"""
    owned = (*DEPLOY_OWNED, *([preview_link] if preview_link else []))
    for path in manifest.paths:
        top = path.split("/")[0]
        if top in owned:
            raise RestoreRefused(
                f"snapshot {manifest.id} would restore {path!r}: {top!r} belongs to deploy "
                "and is never restored", hint="no forge backup holds it: this snapshot "
                "was not made by this environment's backups; restore another one")
        if not any(path == p or path.startswith(p + "/") for p in cfg.paths):
            raise RestoreRefused(
                f"snapshot {manifest.id} holds {path!r}, which is not under this "
                f"environment's backup.paths ({', '.join(cfg.paths) or 'none'})",
                hint="restore replaces only what backup.paths names: add the path there if "
                     "it really is the site's data, or pass --only database")


def plan_restore(ref: SnapshotRef, manifest: Manifest, cfg: BackupConfig, root: str, *,
                 database: str | None = None, to_dir: str | None = None,
                 only: Only | None = None, preview_link: str | None = None) -> RestorePlan:
    """Decide targets: each part goes to its live place unless redirected. Refuses
    (:class:`RestoreRefused`) files outside the places backups belong."""
    db_target, db_live = None, False
    if manifest.database is not None and only != "files":
        if cfg.database is None:
            raise RestoreRefused("the snapshot holds a database but forge.yml has no "
                                 "backup.database (the credentials to restore with)",
                                 hint="add it, or pass --only files")
        try:
            db_target = check_database_name(database or cfg.database.name)
        except DumpError as e:
            raise RestoreRefused(e.message, hint=e.hint) from None
        db_live = db_target == cfg.database.name
    elif database is not None:
        raise RestoreRefused(f"snapshot {ref.id} holds no database to restore")
    dest, live = None, False
    if manifest.files and only != "database":
        check_paths(manifest, cfg, preview_link)
        dest = posixpath.normpath(to_dir) if to_dir else root
        if not dest.startswith("/"):
            raise RestoreRefused(f"--to-dir must be an absolute path on the host: {to_dir}")
        live = dest == posixpath.normpath(root)
    elif to_dir is not None:
        raise RestoreRefused(f"snapshot {ref.id} holds no files to restore")
    if db_target is None and dest is None:
        raise RestoreRefused("nothing to restore with these options")
    return RestorePlan(ref, manifest, root, db_target, db_live, dest, live)


@dataclass
class RestoreReport:
    snapshot_id: str
    database: str | None
    files_dest: str | None
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def run_restore(plan: RestorePlan, repo: Repository, host: Host, cfg: BackupConfig, *,
                yes: bool, log: Callable[[str], None] = lambda _m: None,
                show: MakeProgress = silent) -> RestoreReport:
    """Carry out ``plan``; live targets need ``yes``. See the module docstring.

    ``show`` reports the download and the staging as they go (gha.Runner.progress)."""
    live = plan.live_targets()
    if live and not yes:
        raise RestoreRefused(f"this restore overwrites live data: {', '.join(live)}",
                             hint="pass --yes to confirm, or restore as a drill with "
                                  "--database NAME / --to-dir DIR (and --only)")
    started = time.monotonic()
    if plan.files_live:
        _check_live_paths(host, plan)
    report = RestoreReport(plan.ref.id, plan.database, plan.files_dest)
    with tempfile.TemporaryFile(prefix="forge-restore-") as spool:
        db = plan.manifest.database
        if plan.database and db is not None:
            log(f"downloading and authenticating the database dump ({human_size(db.size)})")
            _fetch_verified(repo, db, spool, show)
        staged = None
        if plan.files_dest:
            log(f"staging files on {host.name}")
            staged = _stage(repo, host, plan, report, show)
        try:
            if plan.database and db is not None and cfg.database is not None:
                log(f"importing into database {plan.database} on {host.name}")
                spool.seek(0)
                import_database(host, cfg.database, plan.database,
                                unseal(_read(spool), repo.identities),
                                create=not plan.database_live)
            if staged is not None:
                log(f"putting the restored files in place on {host.name}")
                _put_in_place(host, plan, staged)
                staged = None
        finally:
            if staged is not None:
                _remove(host, staged.top)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _read(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(READ_SIZE):
        yield chunk


def _fetch_verified(repo: Repository, db: DatabaseEntry, spool: IO[bytes],
                    show: MakeProgress = silent) -> None:
    # What travels is the dump's compressed ciphertext: its size is not known ahead.
    with show("downloading the database dump", files=1) as shown:
        for chunk in repo.store.get(db.object):
            spool.write(chunk)
            shown.advance(0, len(chunk))
        shown.set(1, shown.bytes)
    spool.flush()
    spool.seek(0)
    tail = b""
    for chunk in checked(unseal(_read(spool), repo.identities), sha256=db.sha256,
                         size=db.size, what=f"database dump {db.object}"):
        tail = (tail + chunk)[-512:]
    if not has_trailer(tail):
        raise BackupFormatError(f"database dump {db.object} has no '-- Dump completed' trailer")


@dataclass(frozen=True)
class _Staged:
    top: str  # remove this to undo everything
    new: str  # the staged tree: <new>/<manifest path>


def _stage(repo: Repository, host: Host, plan: RestorePlan, report: RestoreReport,
           show: MakeProgress = silent) -> _Staged:
    assert plan.files_dest is not None
    if plan.files_live:
        top = f"{plan.root}/.forge/restore-{plan.ref.id}"
        leftovers = f"{sh(plan.root + '/.forge')}/restore-*"
    else:
        # Inside the (new or empty) target: needs no write access to its parent.
        _check_drill_target(host, plan.files_dest)
        top = f"{plan.files_dest}/{_DRILL_STAGING}{os.urandom(4).hex()}"
        leftovers = f"{sh(plan.files_dest)}/{_DRILL_STAGING}*"
    staged = _Staged(top, f"{top}/new")
    # What killed attempts staged (of this snapshot or another) goes first.
    host.run(f"rm -rf -- {leftovers}", check=False)
    # The entries stay in the manifest's table; one is made as it is restored.
    table = FileTable.of(plan.manifest.files)
    order = _order(table)
    files = array("l", (i for i in order if table.kind(i) == "file"))
    nbytes = sum(table.size(i) for i in files)
    # The local target has no wire: files are written with system calls, those of a
    # pack by the thread that unpacked it (localtree.NewTree), not by a tar process.
    tree: NewTree | None = None
    try:
        if isinstance(host, LocalHost):
            tree = NewTree(staged.new)
        with _Prefetch(repo, table, files, write=tree.write_file if tree else None) \
                as prefetch, show(f"restoring files to {host.name}", files=len(files),
                                  nbytes=nbytes) as shown:
            if tree is not None:
                _write_local(tree, (table[i] for i in order), prefetch, shown)
            else:
                by_name = {table.path(i): i for i in order}
                write_tree(host, staged.new, (_info(table[i]) for i in order),
                           lambda info: _counted(
                               prefetch.content(table[by_name[_name(info)]]), shown))
    except BaseException:
        _remove(host, top)
        raise
    report.files, report.bytes = len(files), nbytes
    return staged


def _write_local(tree: NewTree, entries: Iterable[FileEntry], prefetch: _Prefetch,
                 shown: Progress) -> None:
    def content(f: FileEntry) -> Iterator[bytes | memoryview]:
        if prefetch.writes(f):  # its pack's worker writes it: wait, then count it
            return _counted_whole(prefetch.content(f), f.size, shown)
        return _counted(prefetch.content(f), shown)

    # Directories come first: the pack workers write into them.
    tree.write_all(entries, content, written=prefetch.writes)


def _counted_whole(chunks: Iterable[bytes | memoryview], size: int,
                   shown: Progress) -> Iterator[bytes | memoryview]:
    """Nothing, once ``chunks`` (a file written elsewhere) ended: then it counts whole."""
    for _ in chunks:
        pass
    shown.advance(1, size)
    yield from ()


def _counted(chunks: Iterable[bytes | memoryview],
             shown: Progress) -> Iterator[bytes | memoryview]:
    """``chunks``, counted into ``shown`` as they pass; the file counts once it ends."""
    for chunk in chunks:
        shown.advance(0, len(chunk))
        yield chunk
    shown.advance(1, 0)


def _order(table: FileTable) -> array[int]:
    """The table's indices: directories (parents first, as listed), then files grouped
    by the object that holds them and by offset - each pack is read once, front to
    back - then links. tar restores directories' modes and times last
    (``--delay-directory-restore``). Grouped, not sorted whole: no key per file."""
    dirs, empty, links = array("l"), array("l"), array("l")
    groups: dict[str, array[int]] = {}  # first object -> its files, first seen first
    for i in range(len(table)):
        kind = table.kind(i)
        if kind == "dir":
            dirs.append(i)
        elif kind == "symlink":
            links.append(i)
        elif (key := table.first_object(i)) is None:
            empty.append(i)
        elif (group := groups.get(key)) is not None:
            group.append(i)
        else:
            groups[key] = array("l", [i])
    order = dirs + empty
    for group in groups.values():
        order += group if len(group) == 1 else array(
            "l", sorted(group, key=lambda i: table.offset(i) or 0))
    return order + links


def _name(info: tarfile.TarInfo) -> str:
    return info.name.rstrip("/")


def _info(f: FileEntry) -> tarfile.TarInfo:
    # Permission bits only: setuid, setgid and sticky bits are never restored.
    return tar_info(f.path, f.type, f.mode & 0o777, f.mtime_ns, size=f.size, target=f.target)


def _content(repo: Repository, f: FileEntry) -> Iterator[bytes]:
    """A file stored alone (or empty), streamed and checked."""
    assert f.sha256 is not None

    def plain() -> Iterator[bytes]:
        for key in f.objects:
            yield from unseal(repo.store.get(key), repo.identities)

    return checked(plain(), sha256=f.sha256, size=f.size, what=f"file {f.path!r}")


def _unpack(repo: Repository, key: str, files: list[FileEntry],
            write: Write | None = None,
            buffers: _Buffers[memoryview] | None = None) -> dict[str, bytes]:
    """Read one pack; each member checked against its file's SHA-256 before it is
    written or returned. With ``write``, each file is written once checked, and maps to
    ``b""``. With ``buffers``, a pack whose plaintext fits one of them is decrypted
    whole into it (authenticated to its end) and its stored members written as views
    of it; a larger one (or content the in-memory reader declines) is streamed."""
    wanted = sorted({(f.offset or 0, f.size) for f in files})
    if buffers is not None:
        buf = buffers.take()
        pieces = None
        try:
            pieces = _pack_pieces(repo, key, buf)
            if pieces is not None:
                parts = dict(zip(wanted, _members(pieces, wanted), strict=True))
                return _place(files, parts, write)
        finally:
            del pieces  # no view of buf outlives this
            buffers.give(buf)
    plain = read_members(unseal(repo.store.get(key), repo.identities), wanted)
    return _place(files, {w: [d] for w, d in zip(wanted, plain, strict=True)}, write)


def _pack_pieces(repo: Repository, key: str,
                 buf: memoryview) -> list[bytes | memoryview] | None:
    """A pack's content decrypted into ``buf`` (as pieces, stored content as views of
    it), or None when it does not fit there (or its zstd is left to the stream path,
    which gives the same errors on the same, authenticated, bytes)."""
    try:
        size = decrypt_into(repo.store.get(key), repo.identities, buf)
    except PlaintextTooLarge:
        return None
    except BackupFormatError as e:
        raise BackupFormatError(f"object {key}: {e.message}", hint=e.hint) from None
    try:
        return decompress_pieces([buf[:size]], limit=len(buf))
    except BackupFormatError:
        return None


def _members(pieces: list[bytes | memoryview],
             wanted: list[tuple[int, int]]) -> Iterator[list[bytes | memoryview]]:
    """Each ``(offset, size)`` of ``wanted`` (sorted) as views of ``pieces``; the
    same checks as :func:`read_members` (no overlap, nothing past the end)."""
    at = 0  # content offset of pieces[i]
    i = 0
    end = 0  # where the last member ended
    last: tuple[int, int] | None = None
    for offset, size in wanted:
        if last == (offset, size):
            yield _views(pieces, i, at, offset, size)
            continue
        if offset < end or size < 0:
            raise BackupFormatError("pack members overlap or are out of order")
        while i < len(pieces) and at + len(pieces[i]) <= offset and size > 0:
            at += len(pieces[i])
            i += 1
        views = _views(pieces, i, at, offset, size)
        if sum(len(v) for v in views) != size:
            raise BackupFormatError("a pack is shorter than the files it should hold")
        end, last = offset + size, (offset, size)
        yield views


def _views(pieces: list[bytes | memoryview], i: int, at: int, offset: int,
           size: int) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    while size > 0 and i < len(pieces):
        piece = memoryview(pieces[i])
        start = offset - at
        take = min(size, len(piece) - start)
        out.append(piece[start:start + take])
        offset, size, at, i = offset + take, size - take, at + len(piece), i + 1
    return out


def _place(files: list[FileEntry], parts: dict[tuple[int, int], list[bytes | memoryview]],
           write: Write | None) -> dict[str, bytes]:
    """Check each file's content, then write it (``b""`` in the result) or copy it."""
    out = {}
    for f in files:
        assert f.sha256 is not None
        data = list(checked(parts[(f.offset or 0, f.size)], sha256=f.sha256, size=f.size,
                            what=f"file {f.path!r}"))
        if write is not None:
            write(f, data)
            out[f.path] = b""
        else:
            out[f.path] = b"".join(data)
    return out


class _Prefetch:
    """Fetch, decrypt and check contents a few jobs ahead of the tar writer, in threads.

    tar needs files one after the other; fetching them one by one would pay a store
    round trip each. A job is a pack (all its files of this snapshot, read in one
    pass) or one object of a file stored in segments; ``window`` jobs (at most
    ``max_bytes`` of plaintext ahead of the one being written, but always the next
    one: a segment's fetch overlaps the writing of the one before, and its hashing
    overlaps its own writing) are in memory or in flight. An object bigger than a
    segment (a manifest from elsewhere) streams in order instead. A pack of at most
    ``pack_bytes`` (every pack forge writes) is decrypted whole into a reused buffer
    and its members written as views of it; a larger one streams too.

    A segment's request goes out earlier than its turn to hold plaintext: up to
    ``requests`` segments ahead are asked for, and each one's body is read (and
    decrypted into a buffer) only once it is within ``max_bytes`` of the one being
    written (:meth:`_wait_turn`). Until then its bytes wait in the socket, unread: the
    store spends its latency (S3's time to first byte, a cold disk behind it) while
    earlier segments are written, and memory holds no more segments than before.
    """

    def __init__(self, repo: Repository, table: FileTable, files: Sequence[int], *,
                 workers: int = 8,
                 window: int = 16, max_bytes: int = 8 * 1024 * 1024,
                 write: Write | None = None,
                 pack_bytes: int = TARGET + MEMBER_MAX + CHUNK_SIZE,
                 requests: int = 4) -> None:
        self._repo, self._window, self._max_bytes = repo, window, max_bytes
        self._requests = requests
        self._write = write
        self._table = table
        # kind, key, its files (indices in table), bytes
        self._jobs: list[tuple[str, str, array[int], int]] = []
        # A packed file's job is its pack's (nothing held per file); a large file's
        # are its segments' (one job per segment and file).
        self._packs: dict[str, int] = {}  # pack key -> its job
        self._of: dict[str, range] = {}  # path of a large file -> its jobs
        for i in files:
            offset, size = table.offset(i), table.size(i)
            if offset is not None:
                key = table.first_object(i)
                assert key is not None
                if key not in self._packs:
                    self._packs[key] = len(self._jobs)
                    self._jobs.append(("pack", key, array("l"), 0))
                kind, _k, members, total = self._jobs[self._packs[key]]
                members.append(i)
                self._jobs[self._packs[key]] = (kind, key, members, total + size)
            elif table.first_object(i) is not None:
                f = table[i]
                if f.size <= SEGMENT * len(f.objects):
                    self._of[f.path] = range(len(self._jobs),
                                             len(self._jobs) + len(f.objects))
                    self._jobs += [("object", key, array("l", [i]), size)
                                   for key, size in zip(f.objects, _segment_sizes(f),
                                                        strict=True)]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-get")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forge-hash")
        # A segment's zstd framing (~200 bytes) fits in a chunk of room above it.
        # Within a file, two are kept free: a segment whose turn came may not have
        # taken its buffer yet (its response is late) when the one being written is
        # given back, and a buffer let go then could still be mapped (a view of it in
        # the writer) when the next turn maps a new one: three. No more than the
        # segments in turn are ever mapped so. Between files one is kept, the rest go
        # (packs need the memory). Mapped: a segment written smaller (2 MiB, by
        # earlier versions) makes only its own pages resident.
        self._buffers = _Buffers(_mapped, SEGMENT + CHUNK_SIZE, keep=2)
        # A pack is sealed once it holds TARGET stored bytes: at most one member (and
        # its framing) more. A larger one (not written by forge) is streamed instead.
        self._pack_buffers = _Buffers(_mapped, pack_bytes, keep=1)
        self._pending: dict[int, Future[dict[str, bytes] | tuple[
            memoryview, list[bytes | memoryview]]]] = {}
        self._next = 0
        # Plaintext bytes of the jobs before each one (a job's turn is told from them).
        self._before = array("q", [0])
        for _kind, _key, _files, size in self._jobs:
            self._before.append(self._before[-1] + size)
        self._turn = threading.Condition()
        self._current, self._closed = 0, False

    def writes(self, f: FileEntry) -> bool:
        """True when ``f`` is written by the worker that unpacks its pack (``write``
        given): :meth:`content` then only waits for it and gives ``b""``."""
        return self._write is not None and f.offset is not None and f.objects[0] in self._packs

    def content(self, f: FileEntry) -> Iterable[bytes | memoryview]:
        if f.offset is not None and f.objects[0] in self._packs:
            i = self._packs[f.objects[0]]
            self._fill(i)
            members = self._pending[i].result()
            assert isinstance(members, dict)
            data = members.pop(f.path)
            if not members:
                del self._pending[i]  # the pack's last file: free it
            return [data]
        jobs = self._of.get(f.path)
        if not jobs:
            return _content(self._repo, f)
        return self._segments(jobs, f)

    def _segments(self, jobs: range, f: FileEntry) -> Iterator[bytes | memoryview]:
        """``f``'s segments in order, checked as :func:`checked` does. Each segment is
        hashed on the hashing thread (the SHA-256 and the write both let go of the
        GIL, so the two run side by side) as soon as it is decrypted: the next one's
        hash starts while this one is still being written, not once it is written."""
        assert f.sha256 is not None
        digest, what, written = Digest(), f"file {f.path!r}", 0

        def hash_of(segment: Future[dict[str, bytes] | tuple[
                memoryview, list[bytes | memoryview]]]) -> None:
            # On the hashing thread, one segment after the other (it runs its tasks
            # in the order they were given: the file's order).
            done = segment.result()
            assert isinstance(done, tuple)
            digest.add(done[1])

        coming: Future[None] | None = None  # the hash of segment i, submitted early
        for i in jobs:
            self._fill(i)
            segment = self._pending.pop(i)
            hashed = coming or self._hasher.submit(hash_of, segment)
            coming = None
            if i + 1 in self._pending and i + 1 in jobs:  # asked for: hash it when it comes
                coming = self._hasher.submit(hash_of, self._pending[i + 1])
            done = segment.result()
            assert isinstance(done, tuple)
            buf, data = done
            written += sum(len(piece) for piece in data)
            if written > f.size:
                raise BackupFormatError(f"{what}: more data than the manifest records")
            try:
                # Each piece is written before the next one is asked for (localtree,
                # tarstream copy what they hold on to).
                yield from data
            finally:
                hashed.result()  # the hash of a file is taken in order
            # No view of buf is in use any more: written, and hashed.
            del data, done
            self._buffers.give(buf)
        self._buffers.keep_at_most(1)  # between files, one is kept
        digest.check(sha256=f.sha256, size=f.size, what=what)

    def _fill(self, current: int) -> None:
        self._next = max(self._next, current)
        with self._turn:
            self._current = current
            self._turn.notify_all()
        while self._next < len(self._jobs) and self._next < current + self._window:
            kind, key, files, _size = self._jobs[self._next]
            if self._next > current:
                # Plaintext in memory ahead: packs are decrypted as soon as they are
                # fetched, segments only in their turn (the others are requests).
                ahead = sum(self._holds(j, current) for j in self._pending if j > current)
                if ahead + self._holds(self._next, current) > self._max_bytes:
                    break
                if kind == "object" and sum(
                        1 for j in self._pending
                        if j > current and self._jobs[j][0] == "object") >= self._requests:
                    break
            if kind == "pack":
                self._pending[self._next] = self._pool.submit(
                    _unpack, self._repo, key, [self._table[i] for i in files], self._write,
                    self._pack_buffers)
            else:
                self._pending[self._next] = self._pool.submit(
                    _object, self._repo, key, SEGMENT, self._buffers,
                    partial(self._wait_turn, self._next))
            self._next += 1

    def _in_turn(self, job: int, current: int) -> bool:
        """May ``job`` hold its plaintext while ``current`` is being written?"""
        return job <= current + 1 or \
            self._before[job + 1] - self._before[current + 1] <= self._max_bytes

    def _holds(self, job: int, current: int) -> int:
        size = self._jobs[job][3]
        return size if self._jobs[job][0] == "pack" or self._in_turn(job, current) else 0

    def _wait_turn(self, job: int) -> None:
        """Until ``job`` (a segment) may be read into a buffer; :class:`_Closed` if the
        restore ended meanwhile (an error elsewhere)."""
        with self._turn:
            self._turn.wait_for(lambda: self._closed or self._in_turn(job, self._current))
            if self._closed:
                raise _Closed

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._turn:
            self._closed = True
            self._turn.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True)


def _segment_sizes(f: FileEntry) -> list[int]:
    """The plaintext size of each of a large file's objects (to pace the prefetch):
    of ``SEGMENT`` bytes but the last, or of ``OLD_SEGMENT`` for a file stored by
    earlier versions - which is told by its size, for a file of two or more objects
    could not be that small otherwise."""
    n = len(f.objects)
    each = OLD_SEGMENT if n > 1 and f.size <= OLD_SEGMENT * n else SEGMENT
    return [each] * (n - 1) + [max(f.size - each * (n - 1), 0)]


class _Buffers(Generic[_B]):
    """Plaintext buffers of one segment or pack each, reused: a fresh one per object
    would be mapped and faulted in anew (MiBs, above the heap's mmap threshold) every
    time. At most ``keep`` are kept free; as many exist as objects are held at once."""

    def __init__(self, make: Callable[[int], _B], size: int, keep: int) -> None:
        self.size, self._keep = size, keep
        self._make: Callable[[int], _B] = make
        self._free: list[_B] = []
        self._lock = threading.Lock()

    def take(self) -> _B:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._make(self.size)

    def give(self, buf: _B) -> None:
        """Only once no view of ``buf`` is in use any more."""
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)

    def keep_at_most(self, n: int) -> None:
        """Let go of the free buffers beyond ``n``."""
        with self._lock:
            del self._free[n:]


def _mapped(size: int) -> memoryview:
    """``size`` bytes of anonymous memory: only the pages written to are resident (a
    bytearray's are all zeroed, so resident, at once)."""
    return memoryview(mmap.mmap(-1, size))


class _Closed(Exception):
    """The restore ended (an error elsewhere) while a segment waited for its turn."""


def _object(repo: Repository, key: str, limit: int, buffers: _Buffers[memoryview],
            turn: Callable[[], None] = lambda: None,
            ) -> tuple[memoryview, list[bytes | memoryview]]:
    """An object's whole plaintext (in pieces), authenticated to its end; at most
    ``limit`` bytes. It is decrypted into a buffer of ``buffers`` (returned: give it
    back once the pieces are written); stored (uncompressed) content comes as views
    of it, so nothing is copied between the decryption and the file's write.

    The object is asked for at once, and its body read from ``turn()`` on (which
    waits, or raises to give up: the unread response is closed)."""
    chunks = iter(repo.store.get(key))
    try:
        first = next(chunks, b"")  # started: closing it closes the response
        turn()
    except BaseException:
        if isinstance(chunks, Generator):
            chunks.close()
        raise
    buf = buffers.take()
    try:
        size = decrypt_into(itertools.chain((first,), chunks), repo.identities, buf)
        return buf, decompress_pieces([buf[:size]], limit=limit)
    except BackupFormatError as e:
        raise BackupFormatError(f"object {key}: {e.message}", hint=e.hint) from None


def _check_drill_target(host: Host, dest: str) -> None:
    d = sh(dest)
    # A killed drill's staging directory does not make the target "not empty".
    others = f"ls -A -- {d} | grep -v {sh('^' + _DRILL_STAGING.replace('.', '[.]'))}"
    r = host.run(f'[ ! -e {d} ] || {{ [ -d {d} ] && [ -z "$({others})" ]; }}', check=False)
    if r.status != 0:
        raise RestoreRefused(f"{dest} on {host.name} exists and is not an empty directory",
                             hint="a drill restores into a new or empty directory")


def _put_in_place(host: Host, plan: RestorePlan, staged: _Staged) -> None:
    assert plan.files_dest is not None
    if not plan.files_live:
        tops = sorted({p.split("/")[0] for p in plan.manifest.paths})
        moves = " && ".join(f"mv -- {sh(staged.new + '/' + t)} {sh(plan.files_dest)}/"
                            for t in tops)
        host.check(host.run(f"{moves} && rm -rf -- {sh(staged.top)}", check=False),
                   f"moving the restored tree into {plan.files_dest}")
        return
    swaps = "\n".join(f"swap {sh(p)}" for p in plan.manifest.paths)
    script = (
        "set -e\n"
        f"new={sh(staged.new)}; old={sh(staged.top)}/old\n"
        f"cd -- {sh(plan.root)}\n"
        "swap() {\n"
        '  [ -e "$new/$1" ] || [ -L "$new/$1" ] || return 0\n'
        '  if [ -e "$1" ] || [ -L "$1" ]; then real=$(readlink -f -- "$1")\n'
        '  else real="$PWD/$1"; mkdir -p -- "$(dirname -- "$real")"; fi\n'
        '  mkdir -p -- "$old/$(dirname -- "$1")"\n'
        '  if [ -e "$real" ]; then mv -- "$real" "$old/$1"; fi\n'
        '  mv -- "$new/$1" "$real"\n'
        "}\n"
        f"{swaps}\n"
        f"rm -rf -- {sh(staged.top)}\n"
    )
    r = host.run(script, check=False)
    if r.status != 0:
        raise ForgeError(f"putting the restored files in place on {host.name} failed: "
                         f"{r.tail()}",
                         hint=f"the previous trees are kept under {staged.top}/old until "
                              "the next restore; run the restore again to finish it")


def _check_live_paths(host: Host, plan: RestorePlan) -> None:
    """A live backup path that is a link into code (``current``, ``releases``) or
    ``.forge`` would have its link target replaced: refuse before anything is written."""
    checks = "\n".join(f"check {sh(p)}" for p in plan.manifest.paths)
    script = (
        f"cd -- {sh(plan.root)} || exit 1\n"
        'top=$(pwd -P)\n'
        "check() {\n"
        '  [ -e "$1" ] || return 0\n'
        '  real=$(readlink -f -- "$1")\n'
        '  case "$real/" in "$top/current/"*|"$top/releases/"*|"$top/.forge/"*)\n'
        '    printf "%s\\n" "$1"; exit 3;; esac\n'
        "}\n"
        f"{checks}\n"
    )
    r = host.run(script, check=False)
    if r.status == 3:
        raise RestoreRefused(f"{plan.root}/{r.stdout.decode(errors='replace').strip()} on "
                             f"{host.name} resolves into code or .forge: not restoring over it",
                             hint="a backup path must be the site's own data (shared/...)")
    host.check(r, f"checking the restore targets under {plan.root}")


def _remove(host: Host, path: str) -> None:
    host.run(f"rm -rf -- {sh(path)}", check=False)
