"""The one contract every ObjectStore keeps (see forge_ci/store/base.py), run against
memory, file:// and s3:// (moto on loopback)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from forge_ci.store import ObjectNotFoundError, ObjectStore
from forge_ci.store.s3 import S3Store

from .conftest import PART, leftovers


def stream(data: bytes, piece: int = 100_003) -> Iterator[bytes]:
    """An unknown-length stream in odd-sized pieces."""
    for pos in range(0, len(data), piece):
        yield data[pos : pos + piece]


def failing(data: bytes, exc: BaseException) -> Iterator[bytes]:
    """Yields ``data`` then raises ``exc``, like a dump whose SSH channel broke."""
    yield from stream(data)
    raise exc


def test_put_get_round_trip(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    assert store.put("data/ab/abcdef", stream(data)) == len(data)
    assert b"".join(store.get("data/ab/abcdef")) == data
    assert store.exists("data/ab/abcdef")
    assert store.size("data/ab/abcdef") == len(data)
    assert store.read_bytes("data/ab/abcdef") == data


def test_empty_object(store: ObjectStore) -> None:
    assert store.put("empty", iter(())) == 0
    assert store.exists("empty") and store.size("empty") == 0
    assert b"".join(store.get("empty")) == b""


def test_get_streams_bounded_chunks(store: ObjectStore) -> None:
    store.put("big", stream(os.urandom(3_000_000)))
    chunks = list(store.get("big"))
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 1024 * 1024


def test_overwrite_replaces_whole(store: ObjectStore) -> None:
    store.put("snapshots/1", [b"old" * 1000])
    store.put("snapshots/1", [b"new"])
    assert store.read_bytes("snapshots/1") == b"new"
    assert list(store.list("snapshots/")) == ["snapshots/1"]


def test_missing_objects(store: ObjectStore) -> None:
    assert not store.exists("nope/nothing")
    with pytest.raises(ObjectNotFoundError):
        store.get("nope/nothing")  # raised at call time, not on first next()
    with pytest.raises(ObjectNotFoundError):
        store.size("nope/nothing")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("locks/a", [b"x"])
    store.delete("locks/a")
    assert not store.exists("locks/a")
    store.delete("locks/a")
    store.delete("never/existed")
    assert list(store.list()) == []


def test_list_with_prefixes(store: ObjectStore) -> None:
    for key in ("a/1", "a/2", "ab/3", "b/4", "a/sub/5"):
        store.put(key, [key.encode()])
    assert sorted(store.list()) == ["a/1", "a/2", "a/sub/5", "ab/3", "b/4"]
    assert sorted(store.list("a/")) == ["a/1", "a/2", "a/sub/5"]
    assert sorted(store.list("a")) == ["a/1", "a/2", "a/sub/5", "ab/3"]
    assert sorted(store.list("a/s")) == ["a/sub/5"]
    assert list(store.list("zzz")) == []
    assert list(store.list("c/")) == []


def test_interrupted_put_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="ssh channel closed"):
        store.put("dumps/db", failing(os.urandom(1_000_000), RuntimeError("ssh channel closed")))
    assert not store.exists("dumps/db")
    assert list(store.list()) == []
    assert leftovers(store) == []


def test_interrupted_multipart_put_leaves_nothing(store: ObjectStore) -> None:
    """Interrupted after two full parts were uploaded: no object, no open upload."""
    with pytest.raises(KeyboardInterrupt):
        store.put("dumps/db", failing(os.urandom(2 * PART + 1000), KeyboardInterrupt()))
    assert not store.exists("dumps/db")
    assert list(store.list()) == []
    assert leftovers(store) == []


def test_interrupted_overwrite_keeps_the_old_object(store: ObjectStore) -> None:
    store.put("manifest", [b"version 1"])
    with pytest.raises(ValueError, match="boom"):
        store.put("manifest", failing(b"version 2 partial", ValueError("boom")))
    assert store.read_bytes("manifest") == b"version 1"
    assert leftovers(store) == []


def test_unknown_length_multipart(store: ObjectStore) -> None:
    data = os.urandom(2 * PART + 123_457)  # three parts on S3
    assert store.put("data/large", stream(data, 333_333)) == len(data)
    assert b"".join(store.get("data/large")) == data
    assert store.size("data/large") == len(data)
    assert leftovers(store) == []
    if isinstance(store, S3Store):  # really went up in parts
        head = store._client.head_object(store.bucket, store.prefix + "data/large")
        assert head["ETag"].strip('"').endswith("-3")


def test_exactly_one_part(store: ObjectStore) -> None:
    """A stream ending exactly at the part size never sends an empty last part."""
    data = os.urandom(PART)
    assert store.put("data/one", stream(data)) == PART
    assert store.read_bytes("data/one") == data


def test_abandoned_get_can_be_closed(store: ObjectStore) -> None:
    store.put("big", stream(os.urandom(2_000_000)))
    reader = store.get("big")
    next(iter(reader))
    reader.close()  # type: ignore[attr-defined]
    store.delete("big")
    assert not store.exists("big")


@pytest.mark.parametrize(
    "bad",
    ["", "/abs", "a//b", "../up", "a/../b", ".hidden", "a/.tmp-x.part", "sp ace", "a/", "x" * 600],
)
def test_invalid_keys_are_refused(store: ObjectStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.put(bad, [b"x"])
    with pytest.raises(ValueError):
        store.exists(bad)


def test_cleanup_keeps_complete_objects(store: ObjectStore) -> None:
    store.put("keep/me", [b"x"])
    assert store.cleanup(older_than=0) == 0
    assert store.read_bytes("keep/me") == b"x"


def test_check_passes_on_a_usable_store(store: ObjectStore) -> None:
    store.check()
