"""A large file restored from many segments is byte for byte the one backed up.

Segments are decrypted into a few reused buffers and written from views of them
(restore._Prefetch): a buffer reused too early would put one segment's bytes in
another's place. Eight segments, more than restore ever holds at once, of both
kinds (stored and compressed), written by the local tree writer.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.localtree import NewTree
from forge_ci.backup.objects import seal
from forge_ci.backup.pack import OLD_SEGMENT, SEGMENT
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import _Prefetch, _segment_sizes
from forge_ci.backup.snapshot import FileEntry, FileTable
from forge_ci.store.errors import ObjectNotFoundError
from forge_ci.store.memory import MemoryStore


def _repo_with(segments: list[bytes]) -> tuple[Repository, FileEntry]:
    identity = generate_identity()
    store = MemoryStore()
    keys = []
    for i, data in enumerate(segments):
        key = f"data/{i:02x}/{os.urandom(32).hex()}"
        store.put(key, seal([data], [identity.recipient], mode="store" if i % 3 else "compress"))
        keys.append(key)
    whole = b"".join(segments)
    entry = FileEntry("video.mp4", "file", 0o640, 1_700_000_000_123_456_789, size=len(whole),
                      sha256=hashlib.sha256(whole).hexdigest(), objects=tuple(keys))
    repo = Repository(store, "s", "e", recipients=[identity.recipient], identities=[identity])
    return repo, entry


def _restore(repo: Repository, entry: FileEntry, dest: Path) -> bytes:
    tree = NewTree(str(dest))
    with _Prefetch(repo, FileTable.of([entry]), [0], max_bytes=3 * SEGMENT) as prefetch:
        tree.write_file(entry, prefetch.content(entry))
    return (dest / entry.path).read_bytes()


def test_many_segments_restore_exactly(tmp_path: Path) -> None:
    text = b"INSERT INTO wp_posts VALUES (1, 'hello');\n" * (SEGMENT // 40)
    segments = [os.urandom(SEGMENT) if i % 3 else text[:SEGMENT] for i in range(7)]
    segments.append(os.urandom(12_345))  # a shorter last one
    repo, entry = _repo_with(segments)
    assert _restore(repo, entry, tmp_path / "out") == b"".join(segments)


def test_a_file_stored_in_the_earlier_2_mib_segments_restores(tmp_path: Path) -> None:
    """Backups made before segments grew to 8 MiB restore as they are; the prefetch
    paces them by their own size (many in flight), not as 8 MiB each."""
    segments = [os.urandom(OLD_SEGMENT) for _ in range(9)] + [os.urandom(5)]
    repo, entry = _repo_with(segments)
    assert _segment_sizes(entry) == [OLD_SEGMENT] * 9 + [5]
    assert _restore(repo, entry, tmp_path / "out") == b"".join(segments)


@pytest.mark.parametrize("sizes", [[SEGMENT], [5], [SEGMENT, 1], [SEGMENT] * 3 + [77],
                                   [OLD_SEGMENT, OLD_SEGMENT], [OLD_SEGMENT, 1]])
def test_each_segment_size_is_told_from_the_file_size(sizes: list[int]) -> None:
    entry = FileEntry("v.mp4", "file", 0o640, 0, size=sum(sizes), sha256="0" * 64,
                      objects=tuple(f"data/00/{i:064x}" for i in range(len(sizes))))
    assert _segment_sizes(entry) == sizes


def test_a_segment_larger_than_a_segment_is_refused(tmp_path: Path) -> None:
    repo, entry = _repo_with([os.urandom(SEGMENT + 1)])
    entry = FileEntry(entry.path, "file", 0o640, 0, size=SEGMENT, sha256=entry.sha256,
                      objects=entry.objects)
    with pytest.raises(BackupFormatError, match="larger than"):
        _restore(repo, entry, tmp_path / "out")


def test_segments_are_hashed_in_the_file_s_order(tmp_path: Path) -> None:
    """Two segments swapped in the manifest are written in the manifest's order and
    refused: the file's SHA-256 is over its segments in order."""
    segments = [os.urandom(SEGMENT) for _ in range(6)]
    repo, entry = _repo_with(segments)
    keys = list(entry.objects)
    keys[1], keys[4] = keys[4], keys[1]
    swapped = FileEntry(entry.path, "file", 0o640, 0, size=entry.size, sha256=entry.sha256,
                        objects=tuple(keys))
    with pytest.raises(BackupFormatError, match="does not match the manifest's SHA-256"):
        _restore(repo, swapped, tmp_path / "out")


def test_a_missing_segment_fails_the_file_without_waiting_forever(tmp_path: Path) -> None:
    segments = [os.urandom(SEGMENT) for _ in range(5)]
    repo, entry = _repo_with(segments)
    repo.store.delete(entry.objects[2])
    with pytest.raises(ObjectNotFoundError):
        _restore(repo, entry, tmp_path / "out")


def test_segments_holding_more_than_the_manifest_records_are_refused(tmp_path: Path) -> None:
    """A store that hands back more bytes than the file's recorded size: refused
    (the restore stages files, so the partial one never reaches the site)."""
    segments = [os.urandom(SEGMENT), os.urandom(SEGMENT), os.urandom(100)]
    repo, entry = _repo_with(segments)
    short = FileEntry(entry.path, "file", 0o640, 0, size=entry.size - 50,
                      sha256=entry.sha256, objects=entry.objects)
    with pytest.raises(BackupFormatError, match="more data than the manifest records"):
        _restore(repo, short, tmp_path / "out")


class _Watched(MemoryStore):
    """A store that tells which objects were asked for, which bodies were read past
    their first chunk, and which responses are still open."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self._objects = store._objects
        self.asked: list[str] = []
        self.read: list[str] = []
        self.open: set[str] = set()

    def get(self, key: str) -> Iterator[bytes]:
        chunks = super().get(key)
        self.asked.append(key)
        return self._body(key, chunks)

    def _body(self, key: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        self.open.add(key)
        try:
            for n, chunk in enumerate(chunks):
                if n == 1:
                    self.read.append(key)
                yield chunk
        finally:
            self.open.discard(key)


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_later_segments_are_asked_for_early_but_read_only_in_their_turn() -> None:
    """While a segment is written, the store is already asked for the next ones (it
    starts on them: S3's latency overlaps the writing), but only the next one is read
    and decrypted: what memory holds does not grow with the requests ahead."""
    segments = [os.urandom(SEGMENT) for _ in range(8)]
    repo, entry = _repo_with(segments)
    store = repo.store = _Watched(repo.store)  # type: ignore[arg-type]
    keys = list(entry.objects)
    with _Prefetch(repo, FileTable.of([entry]), [0], requests=4) as prefetch:
        pieces = iter(prefetch.content(entry))
        first = bytes(next(pieces))  # segment 0 is being written (a view: copied)
        _until(lambda: len(store.asked) == 5)
        _until(lambda: len(store.read) >= 2)
        time.sleep(0.2)  # nothing else is read meanwhile
        assert set(store.asked) == set(keys[:5])  # asked for from several threads
        assert set(store.read) == set(keys[:2])
        rest = b"".join(bytes(piece) for piece in pieces)
    assert first + rest == b"".join(segments)
    assert sorted(store.read) == sorted(keys) and not store.open


def test_segments_waiting_for_their_turn_are_let_go_when_one_fails() -> None:
    """A corrupt first segment fails the file at once; the later segments that were
    asked for and wait for their turn are closed, not left open (or waited for)."""
    segments = [os.urandom(SEGMENT) for _ in range(6)]
    repo, entry = _repo_with(segments)
    store = repo.store = _Watched(repo.store)  # type: ignore[arg-type]
    sealed = bytearray(b"".join(store.get(entry.objects[0])))
    sealed[-100] ^= 1
    store.put(entry.objects[0], [bytes(sealed)])
    store.asked.clear()
    with pytest.raises(BackupFormatError, match="object"), \
            _Prefetch(repo, FileTable.of([entry]), [0], requests=4) as prefetch:
        b"".join(prefetch.content(entry))
    assert len(store.asked) > 2  # segments were waiting for their turn
    assert not store.open
