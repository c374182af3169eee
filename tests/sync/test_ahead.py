"""The sync pipeline's stages run in step: order kept, errors raised where they are read,
and a reader that stops early stops the stage upstream (a dump process is killed)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from forge_ci.sync.database import ahead


def test_every_chunk_arrives_in_order() -> None:
    chunks = [bytes([i % 256]) * (i % 7) for i in range(1000)]
    assert list(ahead(iter(chunks), depth=3)) == chunks


def test_an_error_upstream_is_raised_in_the_reader_after_what_came_before() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        raise ValueError("dump broke")

    got = []
    with pytest.raises(ValueError, match="dump broke"):
        for chunk in ahead(source()):
            got.append(chunk)
    assert got == [b"a"]


def test_a_reader_that_stops_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[bytes]:
        try:
            while True:
                yield b"x"
        finally:
            closed.set()

    stream = ahead(source(), depth=2)
    assert next(stream) == b"x"
    stream.close()
    assert closed.wait(5)


def test_the_producer_stays_within_the_byte_bound() -> None:
    made = [0]

    def source() -> Iterator[bytes]:
        for _ in range(200):
            made[0] += 1
            yield b"x" * 1000

    stream = ahead(source(), depth=1000, max_bytes=10_000)
    read = 0
    for _ in stream:
        read += 1
        # What waits in the box, plus the chunk the producer holds: within the bound.
        assert made[0] - read <= 11
    assert read == 200


def test_a_chunk_larger_than_the_byte_bound_still_passes() -> None:
    chunks = [b"a" * 50, b"b" * 5, b"c" * 70]
    assert list(ahead(iter(chunks), max_bytes=10)) == chunks


def test_chunks_held_compressed_come_out_exactly_as_they_went_in() -> None:
    rng = random.Random(7)
    sql = [(b"INSERT INTO `wp_posts` VALUES " + bytes(rng.choice(b"abc(),'") for _ in range(n)))
           for n in (0, 1, 5000, 70_000, 3, 250_000)] * 20
    noise = [rng.randbytes(n) for n in (10, 40_000)]  # incompressible: bigger when packed
    chunks = sql + noise + sql
    assert list(ahead(iter(chunks), depth=1000, max_bytes=200_000, pack_above=1)) == chunks


def test_a_slow_reader_lets_the_producer_run_further_ahead_when_packing() -> None:
    """What waits is bounded by its compressed size: with SQL-like text the producer
    gets several times further ahead of a reader that has not read yet."""
    def settled(made: list[int]) -> int:
        """The producer's count once it has stopped moving (it is waiting for room)."""
        last, still, deadline = -1, 0, time.monotonic() + 30
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            still = still + 1 if made[0] == last else 0
            last = made[0]
        return last

    def run(pack_above: int | None) -> int:
        made = [0]

        def source() -> Iterator[bytes]:
            for i in range(400):
                made[0] += 1
                yield b"INSERT INTO t VALUES (%d,'https://example.com/')," % i * 500

        stream = ahead(source(), depth=10_000, max_bytes=200_000, pack_above=pack_above)
        first = next(stream)
        assert first.startswith(b"INSERT")
        ahead_of_reader = settled(made)  # the producer has filled the room it has
        assert b"".join([first, *stream]) == b"".join(
            b"INSERT INTO t VALUES (%d,'https://example.com/')," % i * 500 for i in range(400))
        return ahead_of_reader

    plain, packed = run(None), run(20_000)
    assert plain <= 12
    assert packed > 3 * plain
