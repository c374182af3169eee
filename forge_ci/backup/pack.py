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

from collections.abc import Iterable, Iterator, Sequence

from forge_ci.backup import layout
from forge_ci.backup.age import Encryptor, Recipient
from forge_ci.backup.compress import frame_pieces
from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.uploader import SMALL, Uploader

MEMBER_MAX = SMALL  # larger files are stored alone, streamed
TARGET = 4 * 1024 * 1024  # stored bytes per pack

Member = tuple[str, int | None, int]  # content name, plaintext offset (None: whole), size


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
        self._members: list[Member] = []
        self._stored = 0
        self._plain = 0
        self._key: str | None = None
        self.written: dict[str, list[Member]] = {}  # pack key -> members, once queued
        self.names: set[str] = set()  # every content packed by this writer

    def add(self, name: str, data: bytes, *, path: str | None = None) -> tuple[str, int]:
        """Append one content (``path`` only guides compression); (pack key, offset)."""
        if not 0 < len(data) <= MEMBER_MAX:
            raise ValueError("a packed content is 1 byte to MEMBER_MAX bytes")
        if self._key is None or self._encryptor is None:
            self._key = layout.random_data_key()
            self._encryptor = Encryptor(self._recipients)
        key, offset = self._key, self._plain
        for piece in frame_pieces(data, name=path):
            sealed = self._encryptor.update_pieces(piece)
            self._sealed += sealed
            self._stored += sum(len(p) for p in sealed)
        self._members.append((name, offset, len(data)))
        self.names.add(name)
        self._plain += len(data)
        if self._stored >= self._target:
            self.flush()
        return key, offset

    def record_whole(self, key: str, name: str, size: int) -> None:
        """Note an object that holds one content whole (a large file of a first backup,
        stored under a random key), so the index maps the name to it."""
        self.written[key] = [(name, None, size)]
        self.names.add(name)

    def flush(self) -> None:
        """Seal and queue the pack being filled, if any."""
        if self._key is None or self._encryptor is None:
            return
        self._sealed.append(self._encryptor.finish())
        sealed = self._sealed  # pieces: the store sends them without joining
        key, members, plain = self._key, self._members, self._plain
        self._sealed, self._members, self._stored, self._plain = [], [], 0, 0
        self._key = self._encryptor = None
        self._uploader.submit_sealed(key, sealed, plain_size=plain)
        self.written[key] = members


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
        data = bytes(buf[:size])
        del buf[:size]
        start = offset + size
        last = ((offset, size), data)
        yield data
    if drain:
        for _ in chunks:
            pass
