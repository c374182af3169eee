"""The compact forms a backup holds per file, so its memory does not grow with a media
library's size faster than it must: the dedup index, the streamed manifest, the
listing parser, the hash cache written straight from the listing, metadata re-checked
in batches. Each keeps the behaviour (and the bytes) of the plain form it replaces."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from forge_ci.backup import files, layout, scan
from forge_ci.backup.index import BlobIndex
from forge_ci.backup.scan import HashCache, Stat, list_columns, list_tree, parse_listing
from forge_ci.backup.snapshot import FileEntry, dump_chunks, dumps, parse
from forge_ci.errors import RemoteCommandError
from forge_ci.remote import LocalHost

from .test_snapshot_manifest import ROOT, f, manifest


def _name(i: int) -> str:
    return layout.content_name(b"k" * 32, hashlib.sha256(str(i).encode()).hexdigest())


def test_index_finds_packed_contents_only_once_their_pack_is_stored() -> None:
    index = BlobIndex(set())
    pack = layout.random_data_key()
    index.add_packed(_name(1), pack, 0, 10)
    index.add_packed(_name(2), pack, 10, 1 << 20)
    assert index.knows(_name(1)) and _name(1) not in index  # queued, not stored yet
    index.stored([pack])
    assert index.find(_name(1)) == ((pack,), 0)
    assert index.find(_name(2)) == ((pack,), 10)
    assert index.find(_name(3)) is None and not index.knows(_name(3))


def test_index_gives_back_every_entry_as_added_first_wins() -> None:
    packs = [layout.random_data_key() for _ in range(30)]
    index = BlobIndex(set(packs))
    added = {}
    for i in range(3000):
        entry = (packs[i % 30], i * 4096 + (1 << 35), 1 + i % 5000)
        index.load_packed(_name(i), *entry)
        added[_name(i)] = entry
    index.load_packed(_name(7), packs[0], 1, 1)  # a later index naming it again
    assert {n: (p, o, s) for n, p, o, s in index.packed_entries()} == added
    assert set(index.packed) == set(added)
    assert all(index.find(n) == ((p,), o) for n, (p, o, _s) in added.items())


def test_index_refuses_a_member_it_cannot_hold() -> None:
    index = BlobIndex(set())
    with pytest.raises(ValueError, match="out of range"):
        index.add_packed(_name(1), layout.random_data_key(), 0, 1 << 24)


def test_streamed_manifest_is_the_same_bytes_in_pieces() -> None:
    names = ["a b.jpg", "new\nline", "latin1-\udce9.txt", "ünï ✓.png"]
    m = manifest(*(f(f"{ROOT}/{n}-{i}", offset=i * 3) for i in range(500) for n in names),
                 FileEntry(f"{ROOT}/link", "symlink", 0o777, 5, target="a b.jpg-0"))
    pieces = list(dump_chunks(m, chunk=4096))
    assert len(pieces) > 10 and all(len(p) < 4096 + 600 for p in pieces)
    data = b"".join(pieces)
    assert data == dumps(m) and parse(data) == m
    # Exactly what serialising the whole document at once gives.
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
    empty = manifest()
    assert parse(dumps(empty)) == empty


def test_listing_is_parsed_record_by_record(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "odd \udce9\nname").write_bytes(b"x" * 5)
    os.symlink("odd", tmp_path / "d" / "link")
    stats = {s.path: s for s in list_tree(LocalHost(), str(tmp_path), ["d"])}
    assert stats["d/odd \udce9\nname"].size == 5
    assert stats["d/link"].kind == "symlink" and stats["d/link"].target == "odd"
    assert parse_listing(b"") == []
    with pytest.raises(RemoteCommandError, match="truncated"):
        parse_listing(b"f\x005\x001.0\x001.0\x0012\x00644\x00./a\x00")


def test_hash_cache_written_from_the_listing_reads_back(tmp_path: Path) -> None:
    host = LocalHost()
    stats = [Stat("a \"q\" \udce9", "file", 5, 1_700_000_000_123_456_789, 2, 3, 0o644),
             Stat("b", "file", 6, 4, 5, 6, 0o644), Stat("no-hash", "file", 1, 1, 1, 1, 0o644)]
    hashes = {"a \"q\" \udce9": "ab" * 32, "b": "cd" * 32}
    HashCache.write(host, str(tmp_path), ((s, hashes[s.path], None) for s in stats
                                          if s.path in hashes), b"k" * 32)
    cache = HashCache.load(host, str(tmp_path))
    assert [cache.lookup(s) for s in stats] == ["ab" * 32, "cd" * 32, None]
    assert oct((tmp_path / ".forge" / "backup-hashes.json").stat().st_mode & 0o777) == "0o600"


def test_metadata_is_checked_again_in_batches(tmp_path: Path) -> None:
    root = tmp_path / "env"
    (root / "up").mkdir(parents=True)
    for i in range(7):
        (root / "up" / f"{i}.txt").write_bytes(b"x" * i)
    host = LocalHost()
    plan = files.FilePlan.of(list_columns(host, str(root), ["up"]))
    os.utime(root / "up" / "1.txt", ns=(1, 1))
    (root / "up" / "5.txt").unlink()
    moved = files._moved(host, str(root), plan, list(plan.file_rows()), batch=2)
    assert [plan.listing.path(row) for row in moved] == ["up/1.txt", "up/5.txt"]


def test_metadata_checked_again_is_matched_by_path_whatever_the_order() -> None:
    listing = scan.Listing()
    rows = files.row_array(listing.add(f"up/{i}", "file", i, 1, 1, i, 0o644) for i in range(4))
    now = scan.Listing()  # as find could list it: backwards, 1 touched, 2 gone
    for i in (3, 1, 0):
        now.add(f"up/{i}", "file", i, 9 if i == 1 else 1, 1, i, 0o644)
    assert files._differing(listing, rows, now) == [1, 2]
    now = scan.Listing()
    for i in (0, 1, 3):
        now.add(f"up/{i}", "file", i, 9 if i == 1 else 1, 1, i, 0o644)
    assert files._differing(listing, rows, now) == [1, 2]


def test_hash_cache_is_read_record_by_record_or_as_json(tmp_path: Path) -> None:
    host = LocalHost()
    odd = "ü \"q\" \\ \udce9\n\ttab"
    stats = [Stat(odd, "file", 5, -1_000, 2, 3, 0o644), Stat("b", "file", 6, 4, 5, 6, 0o644)]
    hashes = {odd: "ab" * 32, "b": "cd" * 32}
    where, key = "ef" * 32 + ";12", b"k" * 32
    HashCache.write(host, str(tmp_path), [(stats[0], hashes[odd], None),
                                          (stats[1], hashes["b"], where)], key, piece=64)
    # Sent in pieces to a temporary file renamed into place: nothing else is left.
    assert [p.name for p in (tmp_path / ".forge").iterdir()] == ["backup-hashes.json"]
    assert oct((tmp_path / ".forge" / "backup-hashes.json").stat().st_mode & 0o777) == "0o600"
    raw = (tmp_path / ".forge" / "backup-hashes.json").read_bytes()
    assert HashCache._scan(raw) is not None  # the compact reader takes what write gives
    assert [HashCache.load(host, str(tmp_path)).lookup(s) for s in stats] == list(hashes.values())
    # Locations count only with the key whose MAC the file carries.
    assert [HashCache.load(host, str(tmp_path), key).location(s) for s in stats] \
        == [None, where]
    assert HashCache.load(host, str(tmp_path), b"x" * 32).location(stats[1]) is None
    # An older or hand-made cache (spaces, other key order) is still read, as JSON
    # (its hashes: nothing vouches for locations there).
    doc = json.loads(raw)
    (tmp_path / ".forge" / "backup-hashes.json").write_text(json.dumps(
        {"entries": doc["entries"], "version": 1}, indent=1))
    cache = HashCache.load(host, str(tmp_path), key)
    assert [cache.lookup(s) for s in stats] == list(hashes.values())
    assert cache.location(stats[1]) is None
    # Changed metadata, damaged records: a miss (re-hashed), never a wrong hash.
    assert cache.lookup(Stat("b", "file", 6, 4, 5, 7, 0o644)) is None
    (tmp_path / ".forge" / "backup-hashes.json").write_bytes(raw[:-120] + b"}}")
    damaged = HashCache.load(host, str(tmp_path))
    assert damaged.lookup(stats[1]) is None
    cache.save(host, str(tmp_path))  # the compact form saves as the same JSON (hashes)
    assert json.loads((tmp_path / ".forge" / "backup-hashes.json").read_bytes()) == {
        "version": 1, "entries": {k: v[:5] for k, v in doc["entries"].items()}}


def test_listing_columns_give_back_what_find_said_in_any_piece_size(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "odd \udce9\nname").write_bytes(b"x" * 5)
    (d / "empty").write_bytes(b"")
    os.link(d / "empty", d / "hard link")
    os.symlink("odd \udce9\nname", d / "link \udcff")
    (d / "sub").mkdir()
    os.mkfifo(d / "fifo")
    host = LocalHost()
    stats = list_tree(host, str(tmp_path), ["d"])
    by_path = {s.path: s for s in stats}
    assert by_path["d/link \udcff"].kind == "symlink"
    assert by_path["d/link \udcff"].target == "odd \udce9\nname"
    assert by_path["d/empty"].size == 0 and by_path["d/sub"].kind == "dir"
    assert by_path["d/hard link"].inode == by_path["d/empty"].inode
    assert by_path["d/fifo"].kind == "other"
    # The columns, fed the raw output cut anywhere, give the same entries.
    raw = host.run(f"cd {tmp_path} && find ./d -printf '{scan._FIND_FORMAT}'").stdout
    for piece in (1, 7, 64, len(raw)):
        listing, rest = scan.Listing(), b""
        for i in range(0, len(raw), piece):
            rest += raw[i:i + piece]
            rest = rest[listing.parse(rest):]
        assert rest == b"" and list(listing) == stats
    # A row re-stated or dropped; paths decoded from the shared buffer.
    listing = list_columns(host, str(tmp_path), ["d"])
    row = next(r for r in range(len(listing)) if listing.path(r) == "d/odd \udce9\nname")
    (d / "odd \udce9\nname").write_bytes(b"longer")
    listing.update(row, scan.stat_paths(host, str(tmp_path), [listing.path(row)])[0])
    assert listing.size(row) == 6 and listing.stat(row).path == "d/odd \udce9\nname"
    listing.drop(row)
    assert listing.kind(row) is None and len(list(listing)) == len(stats) - 1


def test_plan_digests_are_held_as_raw_bytes_by_row() -> None:
    digests = files.Digests(3)
    digests[1] = "ab" * 32
    assert 1 in digests and 0 not in digests and digests.get(0) is None
    assert digests[1] == "ab" * 32 and digests.get(2) is None
    digests.discard(1)
    assert 1 not in digests
    with pytest.raises(KeyError):
        digests[1]


def test_index_table_keeps_every_name_through_growth_first_wins() -> None:
    packs = [layout.random_data_key() for _ in range(3)]
    index = BlobIndex(set(packs))
    names = [_name(i) for i in range(5000)]  # grows the table several times
    for i, name in enumerate(names):
        index.load_packed(name, packs[i % 3], i * 10, 1 + i % 7)
        index.load_packed(name, packs[0], 1, 1)  # a later index naming it again: ignored
    # Two names whose first 8 bytes agree share a probe chain, never a slot.
    twin = names[0][:16] + "f" * 48
    index.load_packed(twin, packs[1], 3, 4)
    assert index.find(twin) == ((packs[1],), 3)
    assert all(index.find(n) == ((packs[i % 3],), i * 10) for i, n in enumerate(names))
    assert len(list(index.packed_entries())) == 5001 and index.has_packed()
    assert index.find(_name(99_999)) is None and not index.knows(_name(99_999))
    assert not BlobIndex(set()).has_packed()


def test_hash_cache_streamed_in_any_piece_size_reads_the_same(tmp_path: Path) -> None:
    host = LocalHost()
    odd = "ü \"q\" \\ \udce9\n\ttab"
    stats = [Stat(odd, "file", 5, -1_000, 2, 3, 0o644), Stat("b", "file", 6, 4, 5, 6, 0o644)]
    where, key = "ef" * 32 + ";12", b"k" * 32
    HashCache.write(host, str(tmp_path), [(stats[0], "ab" * 32, None),
                                          (stats[1], "cd" * 32, where)], key, piece=64)
    raw = (tmp_path / ".forge" / "backup-hashes.json").read_bytes()
    for n in (1, 3, 64, len(raw)):
        pieces = [raw[i:i + n] for i in range(0, len(raw), n)]
        cache = HashCache._read(pieces, key)
        assert cache is not None and [cache.lookup(s) for s in stats] == ["ab" * 32, "cd" * 32]
        assert [cache.location(s) for s in stats] == [None, where]
        other = HashCache._read(pieces, b"x" * 32)  # its MAC does not hold: hashes only
        assert other is not None and other.location(stats[1]) is None
        assert other.take(stats[1]) == ("cd" * 32, None)
    assert HashCache._read([raw[:-120]]) is None  # cut short: not that shape
    assert HashCache.load(host, str(tmp_path / "none"), key).lookup(stats[1]) is None
