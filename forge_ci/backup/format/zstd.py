"""zstd framing of object plaintext: every stored payload is a valid zstd stream.

The universal restore recipe never changes: ``age -d -i KEY OBJECT | zstd -d``.
There is no "raw" object type a reader would have to recognise. Two writers exist:

* ``compress`` - an ordinary zstd frame (chosen level, content checksum, single
  thread), for text, SQL dumps, PHP, JSON...
* ``store`` - for data that will not shrink (JPEG, MP4, ZIP...): a zstd frame made
  only of *raw* blocks (RFC 8878 block type 0), written here in pure Python: 3 bytes
  of framing per 128 KiB, no compression work at all, and ``zstd -d`` reads it like
  any other frame. Such frames carry no zstd checksum (that needs xxHash64);
  integrity comes from age's authenticated chunks anyway.

A reader can tell the two apart without forge (``zstd -lv``: "Compressed" size ~
decompressed size, no check) but never needs to.

:func:`choose_mode` is the cheap incompressibility test: by file extension first,
else by compressing a sample at level 1 and storing when it saves less than 5 %.

:class:`FrameWriter` builds one frame as the data arrives, for :func:`compress_iter`
and for a large file's segments (a segment is never held whole in plaintext).

:func:`decompress_iter` accepts any zstd stream (concatenated frames, skippable
frames) with bounded memory: output comes in slices of at most ``OUTPUT_SIZE``, the
window is capped at ``max_window_size``, and a stream that stops inside a frame or
has trailing garbage raises :class:`BackupFormatError`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from typing import IO, Literal, cast

import zstandard

from forge_ci.backup.errors import BackupFormatError

Mode = Literal["auto", "compress", "store"]

DEFAULT_LEVEL = 3
SAMPLE_SIZE = 256 * 1024
STORE_RATIO = 0.95  # store when level 1 cannot save 5 % of the sample
OUTPUT_SIZE = 128 * 1024  # under the mmap threshold of forge_ci._malloc: heap buffers, reused
MAX_WINDOW_SIZE = 1 << 27  # the zstd CLI's default limit (128 MiB)
_MAX_FEED = 1024 * 1024
_RAW_BLOCK = 128 * 1024  # largest block; equals the window we declare below
_MAGIC = 0xFD2FB528
# Frame header for stored frames: descriptor 0 (no content size, no checksum, no
# dictionary, not single-segment) then window descriptor 0x38 = 2^(10+7) = 128 KiB.
_STORED_FRAME_HEADER = _MAGIC.to_bytes(4, "little") + b"\x00\x38"

INCOMPRESSIBLE_SUFFIXES = frozenset(
    {
        # images, audio, video
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "avif",
        "heic",
        "heif",
        "jxl",
        "mp4",
        "m4v",
        "mov",
        "webm",
        "mkv",
        "avi",
        "mp3",
        "m4a",
        "aac",
        "ogg",
        "oga",
        "opus",
        "flac",
        # fonts and archives
        "woff",
        "woff2",
        "zip",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "zst",
        "lz4",
        "7z",
        "rar",
        "br",
        "jar",
        "docx",
        "xlsx",
        "pptx",
        "odt",
        "ods",
        "epub",
        "age",
    }
)


def is_incompressible_name(name: str) -> bool:
    """True for names whose extension marks already-compressed content."""
    suffix = posixpath.splitext(name.lower())[1].lstrip(".")
    return suffix in INCOMPRESSIBLE_SUFFIXES


def looks_incompressible(sample: bytes) -> bool:
    """True when zstd level 1 cannot save 5 % of ``sample`` (a prefix of the data)."""
    if len(sample) < 1024:
        return False  # too small to judge and too small to matter
    compressed = zstandard.ZstdCompressor(level=1).compress(sample)
    return len(compressed) >= STORE_RATIO * len(sample)


def choose_mode(name: str | None, sample: bytes) -> Literal["compress", "store"]:
    """Pick the writer for one object: by ``name``'s extension, else by ``sample``."""
    if name is not None and is_incompressible_name(name):
        return "store"
    return "store" if looks_incompressible(sample) else "compress"


def compress_iter(
    chunks: Iterable[bytes],
    *,
    mode: Mode = "auto",
    name: str | None = None,
    level: int = DEFAULT_LEVEL,
) -> Iterator[bytes]:
    """Turn a plaintext stream into one zstd stream, lazily and with bounded memory
    (a :class:`FrameWriter`, its ready bytes handed on after every chunk).

    ``mode="auto"`` reads up to ``SAMPLE_SIZE`` bytes ahead to run :func:`choose_mode`.
    Lazy: nothing is read before the first ``next()``.
    """
    frame = FrameWriter(mode=mode, name=name, level=level)
    for chunk in chunks:
        frame.write(chunk)
        if frame.ready:
            yield frame.take()
    frame.finish()
    yield frame.take()


def _compressor(level: int) -> zstandard.ZstdCompressionObj:
    # threads=0: no worker threads, so memory and CPU use are predictable in CI.
    return zstandard.ZstdCompressor(level=level, write_checksum=True, threads=0).compressobj()


def _compressed_frame(chunks: Iterable[bytes | memoryview], level: int) -> Iterator[bytes]:
    cobj = _compressor(level)
    for chunk in chunks:
        for pos in range(0, len(chunk), _MAX_FEED):
            out = cobj.compress(chunk[pos : pos + _MAX_FEED])
            if out:
                yield out
    yield cobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def _block_header(size: int, *, last: bool) -> bytes:
    """A raw block's 3-byte header: block type 0 in bits 1-2, the last-block flag in bit 0."""
    return ((size << 3) | int(last)).to_bytes(3, "little")


# --- decompression ---------------------------------------------------------------------


def _descriptor_fields(fhd: int) -> int:
    """The bytes of a frame header after its descriptor byte ``fhd`` (window,
    dictionary id, content size), per RFC 8878 section 3.1.1.1."""
    if fhd & 0x08:
        raise BackupFormatError("zstd frame header has the reserved bit set")
    single = (fhd >> 5) & 1
    return (1 - single) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]


def _block_content(header: int) -> int:
    """The bytes a block with 3-byte header ``header`` stores after it."""
    kind = (header >> 1) & 3
    if kind == 3:
        raise BackupFormatError("zstd block of the reserved type")
    return 1 if kind == 1 else header >> 3  # an RLE block stores one byte


class _FrameWalker:
    """Follows zstd frame boundaries (RFC 8878 sections 3.1) without decoding, so that
    the end of the input can be checked to fall exactly at the end of a frame."""

    def __init__(self) -> None:
        self._state, self._need, self._skip = "magic", 4, 0
        self._field = bytearray()
        self._checksum = False
        self.frames = 0

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            step = min(self._need - len(self._field), len(data) - pos)
            self._field += data[pos : pos + step]
            pos += step
            if len(self._field) == self._need:
                value = int.from_bytes(self._field, "little")
                self._field.clear()
                self._advance(value)

    def _advance(self, value: int) -> None:
        handler = getattr(self, f"_on_{self._state}")
        handler(value)

    def _goto(self, state: str, need: int, skip: int = 0) -> None:
        self._state, self._need, self._skip = state, need, skip

    def _on_magic(self, value: int) -> None:
        if value == _MAGIC:
            self._goto("descriptor", 1)
        elif value & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            self._goto("skippable", 4)
        else:
            raise BackupFormatError("not a zstd stream (or trailing data after the last frame)")

    def _on_skippable(self, value: int) -> None:
        self._goto("magic", 4, skip=value)

    def _on_descriptor(self, fhd: int) -> None:
        rest = _descriptor_fields(fhd)
        self._checksum = bool((fhd >> 2) & 1)
        self._goto("block", 3, skip=rest)

    def _on_block(self, header: int) -> None:
        content = _block_content(header)
        if not header & 1:
            self._goto("block", 3, skip=content)
        elif self._checksum:
            self._goto("checksum", 4, skip=content)
        else:
            self.frames += 1
            self._goto("magic", 4, skip=content)

    def _on_checksum(self, _value: int) -> None:
        self.frames += 1
        self._goto("magic", 4)

    def at_frame_end(self) -> bool:
        return self._state == "magic" and not self._field and not self._skip


class _ChunkReader:
    """A minimal ``read(n)`` file over an iterable of chunks, shown to a walker."""

    def __init__(self, chunks: Iterable[bytes], walker: _FrameWalker) -> None:
        self._chunks = iter(chunks)
        self._walker = walker
        self._buf = b""
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._buf, self._pos = bytes(nxt), 0
        limit = len(self._buf) if size < 0 else self._pos + size
        out = self._buf[self._pos : limit]
        self._pos += len(out)
        self._walker.feed(out)
        return out


def decompress_iter(
    chunks: Iterable[bytes], *, max_window_size: int = MAX_WINDOW_SIZE
) -> Iterator[bytes]:
    """Decompress a zstd stream lazily; yields slices of at most ``OUTPUT_SIZE`` bytes.

    Raises :class:`BackupFormatError` for corrupt data, a stream cut inside a frame,
    trailing non-zstd bytes, or an empty input.
    """
    walker = _FrameWalker()
    dctx = zstandard.ZstdDecompressor(max_window_size=max_window_size)
    source = cast(IO[bytes], _ChunkReader(chunks, walker))  # only read() is used
    reader = dctx.stream_reader(source, read_size=_RAW_BLOCK, read_across_frames=True)
    try:
        while out := reader.read(OUTPUT_SIZE):
            yield out
    except zstandard.ZstdError as exc:
        raise BackupFormatError(f"corrupt zstd data: {exc}") from None
    if not walker.at_frame_end() or walker.frames == 0:
        raise BackupFormatError("truncated zstd stream: it ends inside a frame")


class _Cursor:
    """A read position in a list of buffers (a small object's whole plaintext)."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._views = [memoryview(c).cast("B") for c in chunks]
        self._views = [v for v in self._views if len(v)]
        self.at = (0, 0)  # (buffer, offset): where the next read starts

    def at_end(self) -> bool:
        return self.at[0] >= len(self._views)

    def views(self, size: int) -> list[memoryview]:
        """The next ``size`` bytes as views of the buffers (no copy)."""
        out = []
        i, pos = self.at
        while size:
            if i >= len(self._views):
                raise BackupFormatError("truncated zstd stream: it ends inside a frame")
            view = self._views[i]
            take = min(size, len(view) - pos)
            out.append(view[pos : pos + take])
            size -= take
            pos += take
            if pos == len(view):
                i, pos = i + 1, 0
        self.at = (i, pos)
        return out

    def number(self, size: int) -> int:
        """The next ``size`` bytes as a little-endian number."""
        views = self.views(size)
        data = views[0] if len(views) == 1 else b"".join(views)
        return int.from_bytes(data, "little")

    def span(self, start: tuple[int, int]) -> list[memoryview]:
        """Views of the bytes from ``start`` to the current position."""
        end, self.at = self.at, start
        out: list[memoryview] = []
        while self.at != end:
            i, pos = self.at
            stop = end[1] if i == end[0] else len(self._views[i])
            out += self.views(stop - pos)
        return out


def _walk_frame(src: _Cursor, fhd: int) -> None:
    """Move ``src`` from after a frame's descriptor byte ``fhd`` to the frame's end."""
    src.views(_descriptor_fields(fhd))
    while True:
        header = src.number(3)
        src.views(_block_content(header))
        if header & 1:
            break
    if (fhd >> 2) & 1:
        src.views(4)  # the content checksum


def _stored_blocks(src: _Cursor, out: list[bytes | memoryview]) -> bool:
    """The blocks of a stored frame (after its header) into ``out``: raw blocks as
    views of the input, RLE blocks expanded. False, with ``out`` partly filled, at a
    compressed block (zstd must decode the frame)."""
    while True:
        header = src.number(3)
        kind, size = (header >> 1) & 3, header >> 3
        if size > _RAW_BLOCK:
            raise BackupFormatError("corrupt zstd data: a block larger than the window")
        if kind == 0:
            out += src.views(size)
        elif kind == 1:
            out.append(bytes(src.views(1)[0]) * size)
        else:
            return False
        if header & 1:
            return True


class _ViewReader:
    """``read(n)`` over a list of views, for zstd's stream reader."""

    def __init__(self, views: list[memoryview]) -> None:
        self._views, self._i = views, 0

    def read(self, size: int = -1) -> bytes:
        if self._i >= len(self._views):
            return b""
        view = self._views[self._i]
        if 0 <= size < len(view):
            self._views[self._i] = view[size:]
            return bytes(view[:size])
        self._i += 1
        return bytes(view)


def decompress_pieces(chunks: Iterable[bytes | memoryview], *, limit: int,
                      max_window_size: int = MAX_WINDOW_SIZE) -> list[bytes | memoryview]:
    """The content of a whole zstd stream held in memory (one object's plaintext), as
    pieces whose concatenation is what :func:`decompress_iter` gives.

    The content of stored frames (:func:`compress_iter`'s ``store``: raw blocks) comes
    out as views of ``chunks`` themselves, nothing copied; any other frame is decoded
    by zstd. Raises :class:`BackupFormatError` as :func:`decompress_iter` does, and
    when the content is longer than ``limit`` bytes (checked as it is produced).
    """
    src = _Cursor(chunks)
    out: list[bytes | memoryview] = []
    size = frames = 0
    dctx: zstandard.ZstdDecompressor | None = None
    while not src.at_end():
        start = src.at
        magic = src.number(4)
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            src.views(src.number(4))
            continue
        if magic != _MAGIC:
            raise BackupFormatError("not a zstd stream (or trailing data after the last frame)")
        frames += 1
        fhd = src.number(1)
        mark = len(out)
        if fhd == 0 and src.number(1) == _STORED_FRAME_HEADER[5] and _stored_blocks(src, out):
            size += sum(len(p) for p in out[mark:])
            if size > limit:
                raise BackupFormatError(f"zstd content larger than {limit} bytes")
            continue
        del out[mark:]  # not a stored frame after all: zstd decodes it whole
        src.at = start
        src.views(5)
        _walk_frame(src, fhd)
        dctx = dctx or zstandard.ZstdDecompressor(max_window_size=max_window_size)
        source = cast(IO[bytes], _ViewReader(src.span(start)))
        reader = dctx.stream_reader(source, read_size=_RAW_BLOCK, read_across_frames=True)
        try:
            while piece := reader.read(OUTPUT_SIZE):
                size += len(piece)
                if size > limit:
                    raise BackupFormatError(f"zstd content larger than {limit} bytes")
                out.append(piece)
        except zstandard.ZstdError as exc:
            raise BackupFormatError(f"corrupt zstd data: {exc}") from None
    if not frames:
        raise BackupFormatError("truncated zstd stream: it ends inside a frame")
    return out


def decompress_bytes(data: bytes) -> bytes:
    """Whole-buffer convenience for small objects."""
    return b"".join(decompress_iter([data]))


def frame_pieces(data: bytes, *, name: str | None = None,
                 level: int = DEFAULT_LEVEL) -> list[bytes | memoryview]:
    """One zstd frame holding ``data`` (a whole small object), chosen as
    :func:`compress_iter` chooses, as pieces: a stored frame is block headers
    around slices of ``data`` itself, no copy of it."""
    if not data or choose_mode(name, data[:SAMPLE_SIZE]) == "compress":
        return list(_compressed_frame([data], level))
    view = memoryview(data)
    pieces: list[bytes | memoryview] = [_STORED_FRAME_HEADER]
    pos = 0
    while True:
        block = view[pos : pos + _RAW_BLOCK]
        pos += len(block)
        last = pos >= len(view)
        pieces += [_block_header(len(block), last=last), block]
        if last:
            return pieces


class FrameWriter:
    """One zstd frame of data given piece by piece, its ``mode`` chosen with ``auto`` by
    :func:`choose_mode` (by ``name``, else by the first ``SAMPLE_SIZE`` bytes), built
    in :attr:`framed` as the data arrives: :func:`compress_iter` hands its ready bytes
    on after every chunk, and a large file's segment is sealed as it is read, its
    plaintext never held whole.

    The first :attr:`ready` bytes of :attr:`framed` are final; hand them on, then
    :meth:`consume` them. The rest is the raw block being filled (its header's
    last-block flag is known only once more data, or the end, comes). Until the
    mode is chosen nothing is framed: the sample is held aside. Each byte is copied
    once into :attr:`framed` (the sample's twice).
    """

    def __init__(self, *, mode: Mode = "auto", name: str | None = None,
                 level: int = DEFAULT_LEVEL) -> None:
        self.framed = bytearray()
        self.ready = 0  # leading bytes of framed that are final
        self.size = 0  # plaintext bytes written
        self._name, self._level = name, level
        self._sample: list[bytes] | None = []  # held while the mode is undecided
        self._sampled = 0
        self._cobj: zstandard.ZstdCompressionObj | None = None
        self._block_at: int | None = None  # where the open raw block's header is
        self._block_size = 0
        if mode != "auto":
            self._start(mode)
        elif name is not None and is_incompressible_name(name):
            self._start("store")

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._sample is not None:
            self._sample.append(bytes(data))
            self._sampled += len(data)
            if self._sampled >= SAMPLE_SIZE:
                self._decide()
            return
        self._put(data)

    def finish(self) -> None:
        """End the frame: every byte of :attr:`framed` is then ready."""
        if self._sample is not None:
            self._decide()
        if self._cobj is not None:
            self.framed += self._cobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
            self._cobj = None
        elif self._block_at is None:  # nothing was written: one empty last block
            self.framed += _block_header(0, last=True)
        else:
            self._close_block(last=True)
        self.ready = len(self.framed)

    def take(self) -> bytes:
        """The ready bytes, as a copy, consumed."""
        with memoryview(self.framed) as view:
            out = bytes(view[: self.ready])
        self.consume(self.ready)
        return out

    def consume(self, size: int) -> None:
        """Drop the first ``size`` ready bytes (handed on); no view of
        :attr:`framed` may be held."""
        if not 0 <= size <= self.ready:
            raise ValueError("only ready bytes can be consumed")
        del self.framed[:size]
        self.ready -= size
        if self._block_at is not None:
            self._block_at -= size

    def _decide(self) -> None:
        assert self._sample is not None
        sample, self._sample = b"".join(self._sample), None
        self._start(choose_mode(self._name, sample[:SAMPLE_SIZE]))
        if sample:
            self._put(sample)

    def _start(self, mode: Literal["compress", "store"]) -> None:
        self._sample = None
        if mode == "compress":
            self._cobj = _compressor(self._level)
        else:
            self.framed += _STORED_FRAME_HEADER
            self.ready = len(self.framed)

    def _put(self, data: bytes | memoryview) -> None:
        if self._cobj is not None:
            for pos in range(0, len(data), _MAX_FEED):
                self.framed += self._cobj.compress(data[pos : pos + _MAX_FEED])
            self.ready = len(self.framed)
            return
        if not data:
            return
        with memoryview(data) as view:
            pos = 0
            while pos < len(view):
                if self._block_size == _RAW_BLOCK:  # full, and more follows: not the last
                    self._close_block(last=False)
                if self._block_at is None:
                    self._block_at, self._block_size = len(self.framed), 0
                    self.framed += b"\0\0\0"  # the header, once its flag is known
                take = min(len(view) - pos, _RAW_BLOCK - self._block_size)
                self.framed += view[pos : pos + take]
                self._block_size += take
                pos += take
        assert self._block_at is not None
        self.ready = self._block_at

    def _close_block(self, *, last: bool) -> None:
        assert self._block_at is not None
        at = self._block_at
        self.framed[at : at + 3] = _block_header(self._block_size, last=last)
        self._block_at = None
        self.ready = len(self.framed)


def compress_bytes(
    data: bytes, *, mode: Mode = "auto", name: str | None = None, level: int = DEFAULT_LEVEL
) -> bytes:
    """Whole-buffer convenience for small objects."""
    return b"".join(compress_iter([data], mode=mode, name=name, level=level))


__all__ = [
    "DEFAULT_LEVEL",
    "INCOMPRESSIBLE_SUFFIXES",
    "FrameWriter",
    "choose_mode",
    "compress_bytes",
    "compress_iter",
    "decompress_bytes",
    "decompress_iter",
    "decompress_pieces",
    "is_incompressible_name",
    "looks_incompressible",
]
