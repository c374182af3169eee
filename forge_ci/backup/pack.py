"""Packs: the contents of many small files in one stored object.

A WordPress uploads tree is mostly files of a few hundred KiB. Stored one object
each, every file costs a store request (and a bucket reader learns every size).
Files up to ``MEMBER_MAX`` bytes are therefore written one after the other into a
pack - still a plain ``age(zstd(...))`` object: each member is its own zstd frame
(compressed, or raw blocks for media), so ``zstd -d`` of the pack is the members'
concatenation, and a file is ``size`` bytes of it from its ``offset`` (both in the
manifest). A pack is sealed and queued when it holds ``TARGET`` stored bytes.

:func:`read_members` cuts members back out of a pack's plaintext stream, in one
pass, keeping only the member being read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

from forge_ci.backup import layout
from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.format.age import CHUNK_SIZE, TAG_SIZE, Encryptor, Recipient
from forge_ci.backup.format.zstd import FrameWriter, frame_pieces
from forge_ci.backup.uploader import SMALL, Uploader

MEMBER_MAX = SMALL  # larger files are stored as segments
TARGET = 2 * 1024 * 1024  # stored bytes per pack
SEGMENT = 8 * 1024 * 1024  # plaintext bytes per object of a large file
OLD_SEGMENT = 2 * 1024 * 1024  # what earlier versions wrote (still read, of course)

Member = tuple[str, int, int]  # content name, plaintext offset, size


class PackWriter:
    """Collects small contents into packs and hands full packs to ``uploader``.

    :meth:`add` returns where the content will be; the location is real only once
    the uploader has stored the pack (after :meth:`flush` and ``uploader.join()``).
    """

    def __init__(self, uploader: Uploader, recipients: Sequence[Recipient], *,
                 target: int = TARGET) -> None:
        self._uploader, self._recipients, self._target = uploader, list(recipients), target
        self._sealed: list[bytes] = []  # encrypted as members arrive: one copy held
        self._encryptor: Encryptor | None = None
        # Framed plaintext not given to the encryptor yet: it gets whole chunks only
        # (see _seal_chunk).
        self._staged = bytearray()
        self._framed = 0  # framed plaintext bytes of the pack so far
        self._header = 0  # its sealed bytes before the first chunk (age's header)
        self._members: list[Member] = []
        self._plain = 0
        self._key: str | None = None
        self.written: dict[str, int] = {}  # pack key -> how many members, once queued
        self.files: dict[str, tuple[int, tuple[str, ...]]] = {}  # large: name -> size, keys
        self.unwanted: list[str] = []  # segments of files that changed while read

    def add(self, name: str, data: bytes, *, path: str | None = None) -> tuple[str, int]:
        """Append one content (``path`` only guides compression); (pack key, offset)."""
        if not 0 < len(data) <= MEMBER_MAX:
            raise ValueError("a packed content is 1 byte to MEMBER_MAX bytes")
        if self._key is None or self._encryptor is None:
            self._key = layout.random_data_key()
            self._encryptor = Encryptor(self._recipients)
            self._sealed = self._encryptor.update_pieces(b"")  # the header
            self._header = sum(len(p) for p in self._sealed)
        key, offset = self._key, self._plain
        for piece in frame_pieces(data, name=path):
            self._staged += piece
            self._framed += len(piece)
            while len(self._staged) >= CHUNK_SIZE:
                self._seal_chunk(self._encryptor)
        self._members.append((name, offset, len(data)))
        self._plain += len(data)
        if self._stored() >= self._target:
            self.flush()
        return key, offset

    def _seal_chunk(self, encryptor: Encryptor) -> None:
        """Hand the encryptor the first whole chunk staged. Given members piece by
        piece (a few KiB each), it would grow its held-back chunk through every size
        up to 64 KiB between the sealed chunks of packs in flight; given whole chunks,
        its buffers are all one size and the heap reuses them instead of growing."""
        # A copy, not a view: the buffer is cut next, which a view still held anywhere
        # (a frame kept by a traceback or a sampling profiler) would refuse.
        with memoryview(self._staged) as view:
            chunk = bytes(view[:CHUNK_SIZE])
        del self._staged[:CHUNK_SIZE]
        self._sealed += encryptor.update_pieces(chunk)

    def _stored(self) -> int:
        """The pack's sealed size so far as if every framed byte had been given to the
        encryptor: its header and every chunk but the last (held back until it is
        known not to be the last one), so packs close where they always did."""
        chunks = -(-self._framed // CHUNK_SIZE)
        return self._header + max(chunks - 1, 0) * (CHUNK_SIZE + TAG_SIZE)

    def segments(self, chunks: Iterable[bytes], *, path: str | None = None) -> tuple[str, ...]:
        """A large content's segments (see :func:`put_segments`)."""
        return put_segments(self._uploader, self._recipients, chunks, path=path)

    def record_file(self, name: str, size: int, keys: tuple[str, ...]) -> None:
        """Note a large content stored as ``keys``, for this run's index."""
        self.files.setdefault(name, (size, keys))

    def keys(self) -> set[str]:
        """Every object this writer queued: packs and recorded segments."""
        return set(self.written) | {k for _s, ks in self.files.values() for k in ks}

    def flush(self) -> None:
        """Seal and queue the pack being filled, if any."""
        if self._key is None or self._encryptor is None:
            return
        self._sealed += self._encryptor.update_pieces(self._staged)
        self._sealed.append(self._encryptor.finish())
        sealed = self._sealed  # pieces: the store sends them without joining
        key, members, plain = self._key, self._members, self._plain
        self._sealed, self._members, self._framed, self._plain = [], [], 0, 0
        self._staged = bytearray()  # not cleared in place: it was given out
        self._key = self._encryptor = None
        self._uploader.submit_sealed(key, sealed, plain_size=plain)
        self.written[key] = len(members)


def put_segments(uploader: Uploader, recipients: Sequence[Recipient], chunks: Iterable[bytes],
                 *, path: str | None = None, segment: int = SEGMENT) -> tuple[str, ...]:
    """Store a large content as consecutive objects of ``segment`` plaintext bytes (the
    last one shorter), each put with one request under a random key. Returns their
    keys in order (stored once the uploader is joined). An exception of ``chunks``
    propagates; segments already queued are left for prune (nothing references them).

    A segment is framed (:class:`FrameWriter`), sealed and hashed (the SHA-256 its put
    is signed with) as its bytes are read: what is held is the sealed segment alone,
    never its plaintext too. Two segments are in memory at most: one filling while
    the one before travels, or both travelling (the store receives two at once) while
    the next one waits to start."""
    keys: list[str] = []
    source = iter(chunks)
    rest = memoryview(b"")
    while True:
        uploader.wait_for_room(_sealed_size(segment))
        framer = FrameWriter(name=path)
        sealer = _Sealer(recipients)
        while framer.size < segment:
            if not rest:
                chunk = next(source, None)
                if chunk is None:
                    break
                rest = memoryview(chunk)
                continue
            take = min(len(rest), segment - framer.size)
            framer.write(rest[:take])
            rest = rest[take:]
            if framer.ready >= _SEAL_AT:
                sealer.seal(framer)
        framer.finish()
        sealer.seal(framer)
        sealed, digest = sealer.finish()
        key = layout.random_data_key()
        uploader.submit_sealed(key, sealed, plain_size=framer.size, sha256=digest)
        keys.append(key)
        if not rest:
            chunk = next(source, None)
            if chunk is None:
                return tuple(keys)
            rest = memoryview(chunk)


def _sealed_size(plain: int) -> int:
    """An upper bound of a segment's sealed size: age's header (one X25519 stanza per
    recipient, well under 4 KiB for any sane number) and a tag per chunk, over zstd's
    framing of stored blocks (3 bytes per 128 KiB) or of data that did not shrink."""
    return plain + plain // 1024 + 4096


_SEAL_AT = 1024 * 1024  # framed bytes given to the encryptor at once: few held-back chunks


class _Sealer:
    """One object's encryption as its framed plaintext comes, with the SHA-256 of
    the sealed bytes."""

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        self._encryptor = Encryptor(recipients)
        self._sealed: list[bytes] = []
        self._sha256 = hashlib.sha256()

    def seal(self, framer: FrameWriter) -> None:
        """Encrypt the framer's ready bytes, then drop them from it."""
        with memoryview(framer.framed) as view:
            pieces = self._encryptor.update_pieces(view[: framer.ready])
        framer.consume(framer.ready)
        self._add(pieces)

    def finish(self) -> tuple[list[bytes], str]:
        self._add([self._encryptor.finish()])
        return self._sealed, self._sha256.hexdigest()

    def _add(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self._sha256.update(piece)
        self._sealed += pieces


def read_members(plain: Iterable[bytes], wanted: Sequence[tuple[int, int]], *,
                 drain: bool = False) -> Iterator[bytes]:
    """The bytes of each ``(offset, size)`` of ``wanted`` (sorted; equal pairs allowed),
    in order, out of a plaintext stream. Overlapping or out-of-order members and a
    stream too short for them raise :class:`BackupFormatError`. With ``drain`` the
    rest of the stream is consumed too (so its end is authenticated)."""
    chunks = iter(plain)
    buf = bytearray()
    start = 0  # plaintext offset of buf[0]
    last: tuple[tuple[int, int], bytes] | None = None
    for offset, size in wanted:
        if last is not None and last[0] == (offset, size):
            yield last[1]
            continue
        if offset < start or size < 0:
            raise BackupFormatError("pack members overlap or are out of order")
        while start + len(buf) < offset + size:
            chunk = next(chunks, None)
            if chunk is None:
                raise BackupFormatError("a pack is shorter than the files it should hold")
            if start + len(buf) + len(chunk) <= offset:
                start += len(buf) + len(chunk)  # all before this member: drop it
                buf.clear()
                continue
            buf += chunk
        del buf[:offset - start]
        with memoryview(buf) as view:
            data = bytes(view[:size])  # one copy (``bytes(buf[:size])`` makes two)
        del buf[:size]
        start = offset + size
        last = ((offset, size), data)
        yield data
    if drain:
        for _ in chunks:
            pass
