"""The sync pipeline's stages run in step: order kept, errors raised where they are read,
and a reader that stops early stops the stage upstream (a dump process is killed)."""

from __future__ import annotations

import threading
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
