"""zstd framing: `zstd -d` (and `age -d | zstd -d`) always recovers the data."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.format import zstd
from forge_ci.backup.format.age import encrypt_iter
from forge_ci.backup.format.keys import format_identity_file, generate_identity
from forge_ci.backup.format.zstd import (
    OUTPUT_SIZE,
    choose_mode,
    compress_bytes,
    compress_iter,
    decompress_bytes,
    decompress_iter,
    decompress_pieces,
    is_incompressible_name,
)

needs_cli = pytest.mark.skipif(
    shutil.which("zstd") is None or shutil.which("age") is None,
    reason="reference zstd/age not installed",
)
SIZES = [0, 1, 1000, 128 * 1024, 128 * 1024 + 1, 3_000_000]


def text(size: int) -> bytes:
    line = b"INSERT INTO wp_posts VALUES (1, 'hello world', '2024-01-01');\n"
    return (line * (size // len(line) + 1))[:size]


def zstd_cli(data: bytes) -> bytes:
    proc = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.mark.parametrize("mode", ["compress", "store", "auto"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["text", "random"])
def test_round_trip_and_reference_zstd(mode: zstd.Mode, size: int, kind: str) -> None:
    data = text(size) if kind == "text" else os.urandom(size)
    framed = b"".join(compress_iter([data[:7], data[7:]], mode=mode))
    assert decompress_bytes(framed) == data
    if shutil.which("zstd"):
        assert zstd_cli(framed) == data


def test_store_mode_is_raw_blocks() -> None:
    data = os.urandom(1_000_000)
    framed = compress_bytes(data, mode="store")
    blocks = -(-len(data) // (128 * 1024))
    assert len(framed) == 6 + 3 * blocks + len(data)  # header + 3 bytes a block
    params = zstandard.get_frame_parameters(framed)
    assert params.window_size == 128 * 1024 and not params.has_checksum


def test_auto_mode_decides_by_name_then_sample() -> None:
    assert is_incompressible_name("web/app/uploads/2024/01/photo.JPG")
    assert is_incompressible_name("backup.tar.gz")
    assert not is_incompressible_name("dump.sql")
    assert choose_mode("photo.jpg", text(10_000)) == "store"
    assert choose_mode("dump.sql", text(300_000)) == "compress"
    assert choose_mode(None, os.urandom(300_000)) == "store"
    assert choose_mode(None, b"tiny") == "compress"
    # by name: text in a .png is stored as is, without a compression attempt
    assert len(compress_bytes(text(500_000), name="x.png")) > 500_000
    assert len(compress_bytes(text(500_000), name="x.sql")) < 10_000


def test_compress_iter_is_lazy() -> None:
    consumed: list[bool] = []

    def source() -> Iterator[bytes]:
        consumed.append(True)
        yield b"data"

    stream = compress_iter(source())
    assert consumed == []
    assert decompress_bytes(b"".join(stream)) == b"data"


def test_rejects_truncated_trailing_and_garbage() -> None:
    modes: tuple[zstd.Mode, ...] = ("compress", "store")
    for mode in modes:
        framed = compress_bytes(text(400_000), mode=mode)
        for bad in (
            framed[:-1],
            framed[: len(framed) // 2],
            framed[:5],
            framed + b"x",
            framed + bytes(8),
        ):
            with pytest.raises(BackupFormatError):
                decompress_bytes(bad)
    with pytest.raises(BackupFormatError):
        decompress_bytes(b"")
    with pytest.raises(BackupFormatError):
        decompress_bytes(b"plain text, not zstd")
    corrupt = bytearray(compress_bytes(text(400_000), mode="compress"))
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(BackupFormatError):
        decompress_bytes(bytes(corrupt))


def test_accepts_what_zstd_cli_accepts() -> None:
    """Concatenated frames and skippable frames decode like `zstd -d` does."""
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    stream = (
        compress_bytes(b"one ", mode="compress") + skippable + compress_bytes(b"two", mode="store")
    )
    assert decompress_bytes(stream) == b"one two"


def test_decompression_output_is_bounded() -> None:
    """A tiny input that expands hugely still comes out in bounded slices."""
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 * 1024 * 1024))
    assert len(bomb) < 10_000
    total = 0
    for piece in decompress_iter([bomb]):
        assert len(piece) <= OUTPUT_SIZE
        total += len(piece)
    assert total == 64 * 1024 * 1024


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=300_000),
    split=st.integers(1, 300_000),
    mode=st.sampled_from(["compress", "store"]),
)
def test_property_round_trip(data: bytes, split: int, mode: zstd.Mode) -> None:
    framed = b"".join(compress_iter([data[:split], data[split:]], mode=mode))
    pieces = [framed[i : i + split] for i in range(0, len(framed), split)]
    assert b"".join(decompress_iter(pieces)) == data


@needs_cli
@pytest.mark.parametrize("kind", ["sql", "jpeg-like"])
def test_age_then_zstd_is_the_universal_recipe(tmp_path: Path, kind: str) -> None:
    """What a user without forge runs: age -d -i key OBJECT | zstd -d."""
    identity = generate_identity()
    key = tmp_path / "key.txt"
    key.write_text(format_identity_file(identity).reveal())
    data, name = (
        (text(2_000_000), "dump.sql") if kind == "sql" else (os.urandom(2_000_000), "photo.jpg")
    )
    obj = tmp_path / "object"
    obj.write_bytes(b"".join(encrypt_iter(compress_iter([data], name=name), [identity.recipient])))
    if kind == "sql":
        assert obj.stat().st_size < len(data) // 10
    result = subprocess.run(
        f"age -d -i {key} {obj} | zstd -d -c",
        shell=True,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == data


@settings(max_examples=80, deadline=None)
@given(
    size=st.sampled_from([0, 1, 1000, 128 * 1024, 128 * 1024 + 1, 256 * 1024, 300_000,
                          600_000]),
    writes=st.lists(st.integers(1, 140_000), min_size=1, max_size=8),
    seal_at=st.sampled_from([1, 65_536, 1 << 20]),
    kind=st.sampled_from(["text", "random"]),
    name=st.sampled_from([None, "video.mp4", "dump.sql"]),
)
def test_a_frame_written_piece_by_piece_is_the_frame_compress_iter_makes(
        size: int, writes: list[int], seal_at: int, kind: str, name: str | None) -> None:
    """Data written into a FrameWriter in any pieces, its ready bytes taken as they
    come, makes one frame that `zstd -d` reads back; stored, it is byte for byte
    what compress_iter writes."""
    data = text(size) if kind == "text" else os.urandom(size)
    frame = zstd.FrameWriter(name=name)
    out = bytearray()
    pos, i = 0, 0
    while pos < len(data):
        step = writes[i % len(writes)]
        frame.write(memoryview(data)[pos:pos + step])
        pos, i = pos + step, i + 1
        if frame.ready >= seal_at:
            out += frame.framed[:frame.ready]
            frame.consume(frame.ready)
    frame.finish()
    out += frame.framed
    assert frame.size == len(data)
    assert decompress_bytes(bytes(out)) == data
    if kind == "random" or name == "video.mp4":
        assert bytes(out) == b"".join(compress_iter([data], name=name))


def test_only_ready_bytes_can_be_consumed() -> None:
    frame = zstd.FrameWriter(name="video.mp4")
    frame.write(os.urandom(1000))  # its block's last-block flag is not known yet
    with pytest.raises(ValueError, match="ready"):
        frame.consume(frame.ready + 1)


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("split", [1, 5, 65_536, 1 << 30])
def test_decompress_pieces_gives_what_decompress_iter_gives(split: int) -> None:
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    random = os.urandom(300_000)
    streams = [compress_bytes(data, mode=mode)
               for data in (b"", b"x", random, text(400_000), os.urandom(128 * 1024))
               for mode in ("compress", "store")]
    streams.append(b"".join(streams) + skippable + streams[5])
    streams.append(zstandard.ZstdCompressor(level=1).compress(bytes(500_000)))  # RLE
    for stream in streams:
        got = decompress_pieces(_split(stream, split), limit=1 << 30)
        assert b"".join(got) == b"".join(decompress_iter([stream]))


def test_decompress_pieces_gives_stored_content_as_views_of_the_input() -> None:
    data = os.urandom(300_000)
    stream = bytearray(compress_bytes(data, mode="store"))
    pieces = decompress_pieces([stream], limit=len(data))
    assert b"".join(pieces) == data
    assert all(isinstance(p, memoryview) for p in pieces)
    stream[-1] ^= 0xFF  # a view sees the buffer it was cut from
    assert b"".join(pieces)[-1] == data[-1] ^ 0xFF


def test_decompress_pieces_decodes_a_stored_header_frame_with_compressed_blocks() -> None:
    """zstd itself writes forge's stored-frame header (128 KiB window, no checksum, no
    size) over compressed blocks: such a frame goes to zstd whole, raw blocks too."""
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=17, write_checksum=0, write_content_size=0)
    data = os.urandom(200_000) + text(300_000)  # a raw block first, then compressed ones
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = cobj.compress(data) + cobj.flush()
    assert frame[:6] == compress_bytes(b"x", mode="store")[:6]
    assert b"".join(decompress_pieces(_split(frame, 70_000), limit=len(data))) == data


def test_decompress_pieces_rejects_what_decompress_iter_rejects() -> None:
    for mode in ("compress", "store"):
        framed = compress_bytes(text(400_000), mode=mode)
        for bad in (framed[:-1], framed[: len(framed) // 2], framed[:5], framed + b"x",
                    framed + bytes(8), b"", b"plain text, not zstd"):
            with pytest.raises(BackupFormatError):
                decompress_pieces(_split(bad, 70_000), limit=1 << 30)


def test_decompress_pieces_stops_at_the_limit() -> None:
    for mode in ("compress", "store"):
        framed = compress_bytes(text(400_000), mode=mode)
        assert len(b"".join(decompress_pieces([framed], limit=400_000))) == 400_000
        with pytest.raises(BackupFormatError, match="larger than 399999"):
            decompress_pieces([framed], limit=399_999)
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 * 1024 * 1024))
    with pytest.raises(BackupFormatError, match="larger than"):
        decompress_pieces([bomb], limit=1 << 20)
