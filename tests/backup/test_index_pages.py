"""The dedup index in pages, and stored places kept in the hash cache: a backup reads
the directory and only the pages of the names it must look up; an index of an
earlier version is still read; a place the host's cache records is used only when
its MAC (under the naming key, which the host does not hold) checks out."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_ci.backup import index as index_store
from forge_ci.backup import layout
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.backup.take import Source, take_snapshot
from forge_ci.backup.verify import verify_snapshot
from forge_ci.config.backup import BackupConfig
from forge_ci.remote import LocalHost
from forge_ci.store.base import ObjectStore
from forge_ci.store.file import FileStore

PATHS = ("uploads",)
CACHE = Path(".forge") / "backup-hashes.json"


class CountingStore(FileStore):
    """A file store that remembers every key read (a real store, not a mock)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []

    def get(self, key: str) -> Iterator[bytes]:
        self.gets.append(key)
        return super().get(key)


class Lab:
    def __init__(self, tmp: Path, store: ObjectStore | None = None) -> None:
        self.tmp = tmp
        self.root = tmp / "env"
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.store = CountingStore(tmp / "store")
        self.identity = generate_identity()
        self.cfg = BackupConfig(store=f"file://{tmp / 'store'}", paths=PATHS)

    def writer(self) -> Repository:
        return Repository(self.store, "site", "prod", recipients=[self.identity.recipient])

    def reader(self) -> Repository:
        return Repository(self.store, "site", "prod", identities=[self.identity])

    def backup(self) -> dict[str, object]:
        source = Source(LocalHost(), str(self.root), "site", "prod", ("local",))
        self.store.gets.clear()
        return take_snapshot(self.writer(), source, self.cfg).as_dict()

    def index_gets(self) -> list[str]:
        return [k for k in self.store.gets if k.startswith(layout.INDEX)]

    def keys(self, kind: str) -> list[str]:
        prefix = layout.index_prefix(self.writer().naming_key())
        listed = list(self.store.list(prefix))
        if kind == "run":
            return [k for k in listed if layout.is_index_key(k)]
        return [k for k in listed if k.startswith(f"{prefix}{kind}/")]

    def directory(self) -> index_store.Directory:
        [key] = self.keys("dir")
        return index_store.parse_directory(key, self.reader().read_small(key),
                                           layout.index_prefix(self.writer().naming_key()))

    def check_restore(self, sid: object) -> None:
        repo = self.reader()
        ref = repo.resolve(str(sid))
        verify_snapshot(repo, ref)
        dest = self.tmp / f"drill-{sid}"
        plan = plan_restore(ref, repo.load(ref), self.cfg, str(self.root), to_dir=str(dest))
        run_restore(plan, repo, LocalHost(), self.cfg, yes=False)
        assert _tree(dest / "uploads") == _tree(self.uploads)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fill(lab: Lab, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        (lab.uploads / f"img-{i:04d}.jpg").write_bytes(os.urandom(200 + i))
    (lab.uploads / "big.bin").write_bytes(os.urandom(1_300_000))  # segments, not a pack


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(index_store, "PAGE_ENTRIES", 16)
    return 16


def test_a_one_file_backup_reads_the_directory_and_one_page(tmp_path: Path,
                                                             small_pages: int) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 200)
    first = lab.backup()
    # More names than a page holds: written as pages at once, no run object.
    assert lab.keys("run") == [] and len(lab.keys("dir")) == 1
    directory = lab.directory()
    assert len(directory.keys) >= 201 // small_pages and sum(directory.counts) == 201
    lab.check_restore(first["snapshot_id"])

    # New content whose name falls in a page's range (a name before the first page's
    # first name is in no page: nothing to read for it).
    key = lab.writer().naming_key()
    while True:
        body = os.urandom(5000)
        name = layout.content_name(key, hashlib.sha256(body).hexdigest())
        if (page := directory.covering(name)) is not None:
            break
    (lab.uploads / "new.jpg").write_bytes(body)
    second = lab.backup()
    assert (second["upload_files"], second["located"]) == (1, 201)
    # Unchanged files take their place from the hash cache: only the new name is
    # looked up, in the one page whose range holds it.
    [dir_key] = lab.keys("dir")
    assert lab.index_gets() == [dir_key, directory.keys[page]]
    lab.check_restore(second["snapshot_id"])

    # Nothing new: the directory and the small run object only.
    [run] = lab.keys("run")  # the second backup's entry
    third = lab.backup()
    assert third["upload_files"] == 0 and sorted(lab.index_gets()) == sorted([dir_key, run])
    lab.check_restore(third["snapshot_id"])


def test_merging_rewrites_only_the_pages_new_names_fall_in(tmp_path: Path,
                                                           small_pages: int) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 200)
    lab.backup()
    before = set(lab.directory().keys)
    for i in range(index_store.CONSOLIDATE):
        (lab.uploads / f"post-{i}.txt").write_bytes(f"post {i}\n".encode() * 30)
        lab.backup()
    assert len(lab.keys("run")) < index_store.CONSOLIDATE
    after = lab.directory()
    kept = before & set(after.keys)
    assert kept and len(after.keys) - len(kept) <= index_store.CONSOLIDATE * 2
    assert set(lab.keys("page")) == set(after.keys)  # the replaced pages are deleted
    # The hash cache gone: every name is looked up, all found in pages and run objects.
    (lab.root / CACHE).unlink()
    again = lab.backup()
    assert again["upload_files"] == 0 and again["hashed"] == 201 + index_store.CONSOLIDATE
    lab.check_restore(again["snapshot_id"])


def test_an_index_of_one_merged_object_is_still_read_then_paged(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 120)
    monkeypatch.setattr(index_store, "PAGE_ENTRIES", 10_000)
    lab.backup()  # one run object with every entry: what earlier versions wrote
    [old] = lab.keys("run")
    assert lab.keys("dir") == []
    monkeypatch.setattr(index_store, "PAGE_ENTRIES", 16)
    (lab.root / CACHE).unlink()
    (lab.uploads / "new.jpg").write_bytes(os.urandom(5000))
    second = lab.backup()
    assert second["upload_files"] == 1  # everything else found in the old object
    assert old in lab.index_gets()
    assert lab.keys("run") == [] and len(lab.keys("dir")) == 1  # paged, old one gone
    lab.check_restore(second["snapshot_id"])
    (lab.root / CACHE).unlink()
    assert lab.backup()["upload_files"] == 0


def _records(lab: Lab) -> dict[str, list[object]]:
    doc = json.loads((lab.root / CACHE).read_bytes())
    entries: dict[str, list[object]] = doc["entries"]
    return entries


@pytest.mark.parametrize("tamper", ["offset", "swap", "segments", "mac", "json"])
def test_a_tampered_cached_place_is_never_recorded(tmp_path: Path, small_pages: int,
                                                   tamper: str) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 40)
    lab.backup()
    entries = _records(lab)
    a, b, big = "uploads/img-0001.jpg", "uploads/img-0002.jpg", "uploads/big.bin"
    assert all(len(entries[p]) == 6 for p in (a, b, big))  # each with its place
    place_a, place_b, place_big = (str(entries[p][5]) for p in (a, b, big))
    raw = (lab.root / CACHE).read_bytes()
    if tamper == "offset":  # the host moves a file to other bytes of its pack
        objects, offset = place_a.split(";")
        raw = raw.replace(place_a.encode(), f"{objects};{int(offset) + 1}".encode())
    elif tamper == "swap":  # or to another file's real place
        raw = raw.replace(place_a.encode(), b"A").replace(place_b.encode(), place_a.encode())
        raw = raw.replace(b'"A"', b'"%s"' % place_b.encode())
    elif tamper == "segments":  # a large file at a pack
        raw = raw.replace(place_big.encode(), place_a.encode())
    elif tamper == "mac":
        raw = raw[:-3] + (b"0" if raw[-3:-2] != b"0" else b"1") + raw[-2:]
    else:  # the same records as plain JSON, without the MAC
        raw = json.dumps({"version": 1, "entries": entries}).encode()
    assert raw != (lab.root / CACHE).read_bytes()
    (lab.root / CACHE).write_bytes(raw)
    again = lab.backup()
    # Refused, every one: the names are looked up in the index instead, and found.
    assert (again["upload_files"], again["located"], again["hashed"]) == (0, 0, 0)
    assert lab.index_gets()
    lab.check_restore(again["snapshot_id"])
    # The cache written by that backup has the true places again, and counts.
    fresh = _records(lab)
    assert (fresh[a][5], fresh[b][5], fresh[big][5]) == (place_a, place_b, place_big)
    assert lab.backup()["located"] == 41


def test_a_cached_place_in_a_pruned_pack_is_not_used(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 5)
    lab.backup()
    entries = _records(lab)
    pack = "data/" + str(entries["uploads/img-0001.jpg"][5])[:2] + "/" \
        + str(entries["uploads/img-0001.jpg"][5])[:64]
    lab.store.delete(pack)  # as prune would (and the index still names it)
    again = lab.backup()
    assert again["upload_files"] == 5  # the pack's files go up again, not pointed at
    lab.check_restore(again["snapshot_id"])


def test_a_cache_written_under_other_recipients_gives_no_places(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    _fill(lab, 5)
    lab.backup()
    other = Lab(tmp_path / "other")
    other.root, other.uploads = lab.root, lab.uploads  # same host, another store and key
    other.backup()  # the host's cache now carries places in the other store
    again = lab.backup()
    assert (again["located"], again["upload_files"]) == (0, 0)
    assert lab.index_gets()
    lab.check_restore(again["snapshot_id"])
    assert lab.backup()["located"] == 6
