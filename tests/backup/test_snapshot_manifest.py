"""Snapshot manifests: exact round trip, and hostile manifests refused before any write."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_ci.backup import layout, snapshot
from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.snapshot import DatabaseEntry, FileEntry, Manifest, dumps, parse

KEY = layout.data_key(layout.content_name(b"k" * 32, "ab" * 32))
ROOT = "shared/web/app/uploads"
SHA_EMPTY = hashlib.sha256(b"").hexdigest()


def manifest(*files: FileEntry, paths: tuple[str, ...] = (ROOT,)) -> Manifest:
    return Manifest(
        id="20240115T031502Z-3f9a1c2b", time=datetime(2024, 1, 15, 3, 15, 2, 123456, UTC),
        site="example-site", environment="production", hostnames=("deploy@h:22",),
        tool="forge-ci test", paths=paths,
        files=(FileEntry(ROOT, "dir", 0o755, 1), *files),
        database=DatabaseEntry("wp", layout.random_data_key(), 10, "cd" * 32,
                               "MariaDB dump 10.19", "-- Dump completed"),
        stats={"files": 1.0})


def f(path: str, **kw: object) -> FileEntry:
    base = {"type": "file", "mode": 0o644, "mtime_ns": 1_700_000_000_123_456_789,
            "size": 3, "sha256": "ab" * 32, "objects": (KEY,)}
    base.update(kw)
    return FileEntry(path=path, **base)  # type: ignore[arg-type]


def test_round_trip_with_odd_names() -> None:
    names = ["a b.jpg", "-leading-dash", "ünïcödé ✓.png", "new\nline", "latin1-\udce9.txt"]
    m = manifest(*(f(f"{ROOT}/{n}") for n in names),
                 f(f"{ROOT}/empty", size=0, sha256=SHA_EMPTY, objects=()),
                 FileEntry(f"{ROOT}/link", "symlink", 0o777, 5, target="a b.jpg"))
    data = dumps(m)
    data.decode("ascii")  # non-UTF-8 names travel as \udcXX escapes
    assert parse(data) == m
    assert parse(data).objects() == {KEY, m.database.object}  # type: ignore[union-attr]


@pytest.mark.parametrize("window", [1, 2, 7, 64, 1000])
def test_read_a_window_at_a_time_gives_the_same_manifest(
        window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is decoded a window at a time: values cut at any place (numbers,
    UTF-8 sequences, a run of entries), compact or indented, read the same."""
    m = manifest(*(f(f"{ROOT}/{n}-{i}", size=1000 + i, mtime_ns=10**18 + i,
                     objects=(layout.random_data_key(),), offset=i * 1000)
                   for i, n in enumerate(["a b.jpg", "ünï ✓.png", "x},{\"path\":y", "z"])),
                 FileEntry(f"{ROOT}/link", "symlink", 0o777, 5, target="z-3"))
    compact = dumps(m)
    indented = json.dumps(json.loads(compact), indent=1, ensure_ascii=False).encode()
    monkeypatch.setattr(snapshot, "_WINDOW", window)
    assert parse(compact) == m
    assert parse(indented) == m
    with pytest.raises(BackupFormatError):
        parse(compact[:-1])  # cut short
    with pytest.raises(BackupFormatError):
        parse(compact + b"{}")


@settings(max_examples=60)
@given(st.text(alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
               min_size=1, max_size=40).filter(lambda s: s not in (".", "..")))
def test_any_single_name_round_trips(name: str) -> None:
    m = manifest(f(f"{ROOT}/{name}"))
    assert parse(dumps(m)) == m


def _raw(m: Manifest) -> dict:  # type: ignore[type-arg]
    return json.loads(dumps(m))


@pytest.mark.parametrize("path", [
    "/etc/passwd", f"{ROOT}/../../../../etc/cron.d/x", f"{ROOT}/./a", f"{ROOT}//a",
    f"{ROOT}/a/..", "shared/web/app/other/a", "", f"{ROOT}/a\0b",
])
def test_hostile_paths_are_refused(path: str) -> None:
    doc = _raw(manifest(f(f"{ROOT}/ok")))
    doc["files"][1]["path"] = path
    with pytest.raises(BackupFormatError):
        parse(json.dumps(doc).encode())


@pytest.mark.parametrize("target", [
    "/etc", "../../../../..", "../../../../../etc", "a/../../../../../..", "",
])
def test_symlinks_escaping_the_environment_are_refused(target: str) -> None:
    m = manifest(FileEntry(f"{ROOT}/l", "symlink", 0o777, 1, target=target))
    with pytest.raises(BackupFormatError):
        parse(dumps(m))


def test_symlinks_inside_are_fine_but_not_through_another_link() -> None:
    ok = manifest(FileEntry(f"{ROOT}/l", "symlink", 0o777, 1, target="2024/../2025"),
                  FileEntry(f"{ROOT}/2025/up", "symlink", 0o777, 1, target=".."))
    assert parse(dumps(ok)) == ok
    # Inside the environment is not enough: a link in uploads to the live code's .env
    # would publish it.
    for target in ("../../../../current/.env", "../../../../current", "..", "../uploads2"):
        out = manifest(FileEntry(f"{ROOT}/l", "symlink", 0o777, 1, target=target))
        with pytest.raises(BackupFormatError, match="points outside the snapshot's paths"):
            parse(dumps(out))
    # l1 -> "." is the uploads directory itself, but its real place is not where it
    # lies lexically for the links below it: l2 would escape through it.
    chain = manifest(FileEntry(f"{ROOT}/l1", "symlink", 0o777, 1, target="."),
                     FileEntry(f"{ROOT}/l2", "symlink", 0o777, 1, target="l1/../../../.."))
    with pytest.raises(BackupFormatError, match="through another symlink"):
        parse(dumps(chain))


def test_entries_below_a_symlink_or_file_are_refused() -> None:
    m = manifest(FileEntry(f"{ROOT}/l", "symlink", 0o777, 1, target="x"), f(f"{ROOT}/l/evil"))
    with pytest.raises(BackupFormatError, match="not a directory"):
        parse(dumps(m))
    m = manifest(f(f"{ROOT}/a"), f(f"{ROOT}/a/b"))
    with pytest.raises(BackupFormatError, match="not a directory"):
        parse(dumps(m))


def test_duplicates_and_malformed_fields_are_refused() -> None:
    with pytest.raises(BackupFormatError, match="twice"):
        parse(dumps(manifest(f(f"{ROOT}/a"), f(f"{ROOT}/a"))))
    for bad in ({"objects": ("data/zz/../../x",)}, {"sha256": "nothex"}, {"size": -1},
                {"mode": 0o17777}, {"size": 0}, {"objects": ()}):
        with pytest.raises(BackupFormatError):
            parse(dumps(manifest(f(f"{ROOT}/a", **bad))))
    doc = _raw(manifest())
    doc["version"] = 2
    with pytest.raises(BackupFormatError, match="version"):
        parse(json.dumps(doc).encode())
    with pytest.raises(BackupFormatError):
        parse(b"\xff not json")
    with pytest.raises(BackupFormatError, match="says it is"):
        parse(dumps(manifest()), expect_id="20240115T031502Z-00000000")


def test_hostile_backup_roots_are_refused() -> None:
    m = dataclasses.replace(manifest(), paths=("../..",), files=())
    with pytest.raises(BackupFormatError, match="hostile backup path"):
        parse(dumps(m))


def test_object_names_are_keyed_and_reveal_nothing_plain() -> None:
    sha = hashlib.sha256(b"a public image").hexdigest()
    k1 = layout.naming_key(["age1aaa", "age1bbb"])
    assert k1 == layout.naming_key(["age1bbb", "age1aaa", "age1aaa"])  # a set
    key = layout.data_key(layout.content_name(k1, sha))
    assert sha not in key and layout.is_data_key(key)
    # Another recipient set names the same content differently: no cross-key dedup.
    assert layout.data_key(layout.content_name(layout.naming_key(["age1ccc"]), sha)) != key
    assert not layout.is_data_key("data/00/" + "11" * 32)
    sid = layout.new_snapshot_id(datetime(2024, 1, 15, 3, 15, 2, tzinfo=UTC))
    assert sid.startswith("20240115T031502Z-") and layout.is_snapshot_id(sid)
    assert layout.parse_group_key(layout.manifest_key("s", "e", sid), layout.SNAPSHOTS) == \
        ("s", "e", sid)


def test_any_json_layout_reads_the_same_and_malformed_text_is_refused() -> None:
    """The manifest is read a key and an entry at a time (not as one tree of dicts),
    with JSON's own rules: spacing and key order do not matter; anything that is
    not one JSON object is refused."""
    m = manifest(f(f"{ROOT}/a.jpg", offset=7), f(f"{ROOT}/b.jpg"),
                 FileEntry(f"{ROOT}/link", "symlink", 0o777, 5, target="a.jpg"))
    doc = _raw(m)
    spaced = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    assert parse(spaced) == m
    assert parse(json.dumps({**doc, "files": []}).encode()).files == ()
    for bad in (dumps(m) + b" x", dumps(m)[:-1], b"[1]", b'{"files": {}}', b"{}",
                dumps(m).replace(b'"files":[', b'"files":[1,')):
        with pytest.raises(BackupFormatError, match="invalid snapshot manifest"):
            parse(bad)


def test_a_parsed_manifest_is_a_table_that_reads_like_its_entries() -> None:
    """A restore holds the entries as columns: every field of every kind of entry, a
    non-UTF-8 name, negative indexes and slices, and the sums taken from the columns."""
    shared = layout.random_data_key()
    m = manifest(f(f"{ROOT}/a", objects=(shared,), offset=0),
                 f(f"{ROOT}/b-\udce9", objects=(shared,), offset=3, mode=0o7777),
                 f(f"{ROOT}/video", size=5 << 20, mtime_ns=-5,
                   objects=tuple(layout.random_data_key() for _ in range(3))),
                 f(f"{ROOT}/empty", size=0, sha256=SHA_EMPTY, objects=()),
                 FileEntry(f"{ROOT}/sub", "dir", 0o700, 7),
                 FileEntry(f"{ROOT}/link", "symlink", 0o777, 5, target="a"))
    got = parse(dumps(m))
    assert isinstance(got.files, snapshot.FileTable)
    assert list(got.files) == list(m.files) and got == m
    assert got.files[-1] == m.files[-1] and got.files[1:3] == tuple(m.files[1:3])
    assert [got.files.path(i) for i in range(len(m.files))] == [e.path for e in m.files]
    assert got.objects() == m.objects() and got.total_bytes == m.total_bytes
    with pytest.raises(IndexError):
        got.files[len(m.files)]


def test_a_number_too_large_for_the_table_is_a_format_error() -> None:
    raw = _raw(manifest(f(f"{ROOT}/a")))
    raw["files"][1]["size"] = 2**64
    with pytest.raises(BackupFormatError, match="invalid snapshot manifest"):
        parse(json.dumps(raw).encode())
