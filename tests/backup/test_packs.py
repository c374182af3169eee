"""Small files travel in packs; the index lets a backup that holds only the public key
skip what is stored, and a pruned pack or a damaged index costs re-uploads, never a
snapshot that cannot be restored."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_ci.backup import files, layout
from forge_ci.backup import index as index_store
from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.index import BlobIndex
from forge_ci.backup.pack import SEGMENT, PackWriter, put_segments, read_members
from forge_ci.backup.prune import prune
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.backup.scan import HashCache
from forge_ci.backup.take import Source, take_snapshot
from forge_ci.backup.uploader import Uploader
from forge_ci.backup.verify import verify_snapshot
from forge_ci.config.backup import BackupConfig, Retention
from forge_ci.remote import LocalHost
from forge_ci.store.file import FileStore

PATHS = ("uploads",)


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "env"
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(parents=True)
        self.store = FileStore(tmp / "store")
        self.identity = generate_identity()
        self.cfg = BackupConfig(store=f"file://{tmp / 'store'}", paths=PATHS)

    def writer(self) -> Repository:  # what CI has: the public key only
        return Repository(self.store, "site", "prod", recipients=[self.identity.recipient])

    def reader(self) -> Repository:
        return Repository(self.store, "site", "prod", identities=[self.identity])

    def backup(self) -> dict[str, object]:
        source = Source(LocalHost(), str(self.root), "site", "prod", ("local",))
        return take_snapshot(self.writer(), source, self.cfg).as_dict()

    def restore_to(self, dest: Path, sid: str) -> None:
        repo = self.reader()
        ref = repo.resolve(sid)
        plan = plan_restore(ref, repo.load(ref), self.cfg, str(self.root), to_dir=str(dest))
        run_restore(plan, repo, LocalHost(), self.cfg, yes=False)

    def index_keys(self) -> list[str]:
        return [k for k in self.store.list(layout.INDEX) if layout.is_index_key(k)]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_small_files_share_packs_and_a_second_backup_sends_nothing(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    for i in range(60):
        (lab.uploads / f"img-{i:02d}.jpg").write_bytes(os.urandom(50_000 + i))
    (lab.uploads / "copy.jpg").write_bytes((lab.uploads / "img-00.jpg").read_bytes())
    (lab.uploads / "video.mp4").write_bytes(os.urandom(1_500_000))
    first = lab.backup()
    # A first backup reads every file once (62; the copy is found to be a duplicate
    # as it passes): 61 contents in two packs (3 MB) and the video in one segment.
    assert (first["upload_files"], first["new_objects"]) == (62, 3)
    assert len(lab.index_keys()) == 1

    # The host's hash cache gone: only the index (read with the public key) can tell
    # that every content is stored.
    (lab.root / ".forge" / "backup-hashes.json").unlink()
    second = lab.backup()
    assert (second["upload_files"], second["new_objects"], second["hashed"]) == (0, 0, 62)
    assert len(lab.index_keys()) == 1  # nothing packed, nothing indexed

    verify_snapshot(lab.reader(), lab.reader().resolve(str(second["snapshot_id"])))
    lab.restore_to(tmp_path / "drill", str(second["snapshot_id"]))
    assert _tree(tmp_path / "drill" / "uploads") == _tree(lab.uploads)


def test_a_pruned_pack_is_not_trusted_and_its_content_goes_up_again(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    gone = lab.uploads / "gone.txt"
    gone.write_bytes(b"only in the first snapshot\n" * 100)
    content = gone.read_bytes()
    lab.backup()  # its pack holds `gone` alone
    gone.unlink()
    (lab.uploads / "new.txt").write_bytes(b"second snapshot\n" * 100)
    lab.backup()
    plan = prune(lab.reader(), Retention(keep_last=1))
    assert len(plan.forget) == 1 and len(plan.delete) == 1  # the pack that held `gone`
    # The index still names the deleted pack: a backup must not point there.
    gone.write_bytes(content)
    third = lab.backup()
    assert third["upload_files"] == 1
    repo = lab.reader()
    verify_snapshot(repo, repo.resolve(str(third["snapshot_id"])))
    lab.restore_to(tmp_path / "drill", str(third["snapshot_id"]))
    assert (tmp_path / "drill" / "uploads" / "gone.txt").read_bytes() == content


def test_a_damaged_index_costs_an_upload_not_a_backup(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    (lab.uploads / "a.txt").write_bytes(b"a" * 5000)
    lab.backup()
    [key] = lab.index_keys()
    path = tmp_path / "store" / key
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    (lab.root / ".forge" / "backup-hashes.json").unlink()
    again = lab.backup()
    assert again["upload_files"] == 1
    repo = lab.reader()
    verify_snapshot(repo, repo.resolve(str(again["snapshot_id"])))


def test_indexes_are_merged_when_they_pile_up(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    counts = []
    for i in range(index_store.CONSOLIDATE + 2):
        (lab.uploads / f"post-{i}.txt").write_bytes(f"post {i}\n".encode() * 50)
        lab.backup()
        counts.append(len(lab.index_keys()))
    assert max(counts) < index_store.CONSOLIDATE and counts[-1] <= 3
    # Everything is still found: the cache gone, nothing is uploaded again.
    (lab.root / ".forge" / "backup-hashes.json").unlink()
    assert lab.backup()["upload_files"] == 0


def test_index_objects_open_with_the_identity_too(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    (lab.uploads / "a.txt").write_bytes(b"hello\n")
    lab.backup()
    [key] = lab.index_keys()
    packs, files_ = index_store.parse(lab.reader().read_small(key))
    assert files_ == {}
    [(pack, members)] = packs.items()
    assert lab.store.exists(pack) and [m[1:] for m in members] == [(0, 6)]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000),
       cuts=st.lists(st.integers(0, 3000), max_size=8),
       members=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 400)), max_size=10),
       drain=st.booleans())
def test_read_members_is_slicing(data: bytes, cuts: list[int],
                                 members: list[tuple[int, int]], drain: bool) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    wanted = sorted(members)
    overlapping = any(b[0] < a[0] + a[1] and a != b for a, b in itertools.pairwise(wanted))
    too_short = any(o + s > len(data) for o, s in wanted)
    try:
        got = list(read_members(chunks, wanted, drain=drain))
    except BackupFormatError:
        assert overlapping or too_short
        return
    assert not too_short
    assert got == [data[o:o + s] for o, s in wanted]


def test_a_first_backup_reads_once_and_catches_a_file_rewritten_meanwhile(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    target = lab.uploads / "a.txt"
    target.write_bytes(b"old " * 100)
    big = lab.uploads / "big.bin"
    big.write_bytes(os.urandom(1_500_000))
    (lab.uploads / "b.txt").write_bytes(b"stays " * 100)
    repo, host = lab.writer(), LocalHost()
    index = BlobIndex(set())
    plan = files.plan(host, str(lab.root), PATHS, repo.naming_key(), index, HashCache())
    # No hashing pass: each file is hashed as it goes up.
    assert sorted(plan.listing.path(row) for row in plan.unhashed) \
        == ["uploads/a.txt", "uploads/b.txt", "uploads/big.bin"]
    # Rewritten after the listing, same size: only their metadata tells.
    new_big = os.urandom(1_500_000)
    target.write_bytes(b"new " * 100)
    big.write_bytes(new_big)
    for path in (target, big):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with Uploader(repo) as uploader:
        files.upload(host, str(lab.root), plan, repo.naming_key(), index, uploader,
                     PackWriter(uploader, repo.recipients))
    entries = {e.path: e for e in plan.entries(index)}
    assert entries["uploads/a.txt"].sha256 == hashlib.sha256(b"new " * 100).hexdigest()
    assert entries["uploads/big.bin"].sha256 == hashlib.sha256(new_big).hexdigest()
    # The metadata recorded is that of the bytes that were stored.
    assert entries["uploads/a.txt"].mtime_ns == entries["uploads/big.bin"].mtime_ns \
        == 1_000_000_000


class _Capture:
    def __init__(self) -> None:
        self.packs: list[tuple[bytes, int]] = []

    def submit_sealed(self, key: str, pieces: list[bytes], *, plain_size: int) -> None:
        self.packs.append((b"".join(pieces), plain_size))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 7, 3000, 40_000, 65_535, 65_536, 65_537,
                                           200_000, 1 << 20]),
                          st.sampled_from([".jpg", ".txt"])), min_size=1, max_size=60),
       st.sampled_from([1, 70_000, 300_000, 2 * 1024 * 1024]))
def test_packs_close_where_sealing_each_piece_as_it_comes_would(
        members: list[tuple[int, str]], target: int) -> None:
    """The writer gives its encryptor whole chunks; a pack still closes at the member
    whose sealed bytes, had every piece been sealed as it came, reach ``target``."""
    from forge_ci.backup.format.age import Encryptor, decrypt_iter
    from forge_ci.backup.format.zstd import decompress_iter, frame_pieces
    identity = generate_identity()
    contents = [((b"%d " % i) * size)[:size] if ext == ".txt" else os.urandom(size)
                for i, (size, ext) in enumerate(members)]
    capture = _Capture()
    writer = PackWriter(capture, [identity.recipient], target=target)  # type: ignore[arg-type]
    for i, (data, (_size, ext)) in enumerate(zip(contents, members, strict=True)):
        writer.add(f"{i:064x}", data, path=f"f{ext}")
    writer.flush()
    expected: list[list[int]] = [[]]  # the members of each pack, sealing piece by piece
    plain: list[bytes] = [b""]
    encryptor, stored = Encryptor([identity.recipient]), 0
    for i, (data, (_size, ext)) in enumerate(zip(contents, members, strict=True)):
        for piece in frame_pieces(data, name=f"f{ext}"):
            stored += sum(len(p) for p in encryptor.update_pieces(piece))
        expected[-1].append(i)
        plain[-1] += data
        if stored >= target and i < len(contents) - 1:
            expected.append([])
            plain.append(b"")
            encryptor, stored = Encryptor([identity.recipient]), 0
    assert list(writer.written.values()) == [len(m) for m in expected]
    assert [size for _sealed, size in capture.packs] == [len(p) for p in plain]
    for (sealed, _size), want in zip(capture.packs, plain, strict=True):
        assert b"".join(decompress_iter(decrypt_iter([sealed], [identity]))) == want


class _SegmentCapture:
    def __init__(self) -> None:
        self.objects: list[tuple[bytes, int, str | None]] = []

    def submit_sealed(self, key: str, pieces: list[bytes], *, plain_size: int,
                      sha256: str | None = None) -> None:
        self.objects.append((b"".join(pieces), plain_size, sha256))

    def wait_for_room(self, size: int) -> None:
        assert size >= SEGMENT  # room for a whole segment, sealed


@pytest.mark.parametrize(("size", "step", "name"), [
    (0, 1, "v.mp4"), (1, 1, "v.mp4"), (SEGMENT, 131_072, "v.mp4"),
    (SEGMENT + 1, 100_003, "v.mp4"), (2 * SEGMENT + 12_345, 1 << 20, "v.mp4"),
    (SEGMENT + 300_000, 131_072, "dump.sql"), (SEGMENT + 1, 65_536, None)])
def test_segments_are_cut_sealed_and_hashed_as_they_are_read(
        size: int, step: int, name: str | None) -> None:
    """A large content in reads of any size becomes objects of SEGMENT plaintext bytes
    (the last shorter; one empty object for no bytes), each the sealed frame of its
    bytes, handed on with the SHA-256 of exactly what is stored."""
    from forge_ci.backup.format.age import decrypt_iter
    from forge_ci.backup.format.zstd import decompress_iter
    identity = generate_identity()
    line = b"INSERT INTO wp_posts VALUES (1, 'hello world');\n"
    data = (line * (size // len(line) + 1))[:size] if name == "dump.sql" else os.urandom(size)
    capture = _SegmentCapture()
    keys = put_segments(capture, [identity.recipient],  # type: ignore[arg-type]
                        (data[i:i + step] for i in range(0, len(data), step)), path=name)
    want = [data[i:i + SEGMENT] for i in range(0, len(data), SEGMENT)] or [b""]
    assert len(keys) == len(set(keys)) == len(capture.objects) == len(want)
    for (sealed, plain_size, sha256), part in zip(capture.objects, want, strict=True):
        assert sha256 == hashlib.sha256(sealed).hexdigest()
        assert plain_size == len(part)
        assert b"".join(decompress_iter(decrypt_iter([sealed], [identity]))) == part
    if name == "dump.sql":  # text is compressed, segment by segment
        assert sum(len(s) for s, _n, _d in capture.objects) < size // 4
