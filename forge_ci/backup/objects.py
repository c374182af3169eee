"""Sealing and opening object streams: plaintext <-> age(zstd(plaintext)).

Every function here is lazy and streams: memory stays at a few chunks whatever the
object size. :class:`Digest` hashes a stream as it passes, so an upload and its
SHA-256 come from the same single read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from forge_ci.backup.errors import BackupFormatError
from forge_ci.backup.format.age import Identity, Recipient, decrypt_iter, encrypt_iter
from forge_ci.backup.format.zstd import Mode, compress_iter, decompress_iter

Piece = TypeVar("Piece", bytes, bytes | memoryview)  # views: restore's stored content


def seal(chunks: Iterable[bytes], recipients: Sequence[Recipient], *,
         mode: Mode = "auto", name: str | None = None) -> Iterator[bytes]:
    """The stored form of a plaintext stream. ``name`` only guides compression
    (``.jpg`` is stored, not compressed) and is never written anywhere."""
    return encrypt_iter(compress_iter(chunks, mode=mode, name=name), recipients)


def unseal(chunks: Iterable[bytes], identities: Sequence[Identity]) -> Iterator[bytes]:
    """Plaintext of a stored object. Each piece is authenticated before it is yielded,
    but truncation and corruption near the end surface only as the *last* step of
    the iteration: never act on the pieces before the iterator is exhausted unless
    the whole object was verified first (see :mod:`forge_ci.backup.format.age`)."""
    return decompress_iter(decrypt_iter(chunks, identities))


class Digest:
    """SHA-256 and byte count of whatever :meth:`tee` lets through."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def tee(self, chunks: Iterable[Piece]) -> Iterator[Piece]:
        for chunk in chunks:
            self._h.update(chunk)
            self.size += len(chunk)
            yield chunk

    def add(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Hash ``chunks`` (from any one thread at a time: hashlib lets go of the GIL
        on large pieces, so this runs beside whatever else reads them)."""
        for _ in self.tee(chunks):
            pass

    @property
    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def refuse_past(self, size: int, *, what: str) -> None:
        """Raise :class:`BackupFormatError` if what was hashed is longer than the
        ``size`` the manifest records."""
        if self.size > size:
            raise BackupFormatError(f"{what}: more data than the manifest records")

    def check(self, *, sha256: str, size: int, what: str) -> None:
        """Raise :class:`BackupFormatError` unless what was hashed is the manifest's
        ``size`` bytes of SHA-256 ``sha256``."""
        if self.size != size or self.hexdigest != sha256:
            raise BackupFormatError(f"{what}: content does not match the manifest's SHA-256")


def checked(chunks: Iterable[Piece], *, sha256: str, size: int, what: str) -> Iterator[Piece]:
    """Pass ``chunks`` through and raise :class:`BackupFormatError` at the end (or as
    soon as the size is exceeded) unless they hash to ``sha256`` and ``size``."""
    digest = Digest()
    for chunk in digest.tee(chunks):
        digest.refuse_past(size, what=what)
        yield chunk
    digest.check(sha256=sha256, size=size, what=what)


def on_end(chunks: Iterable[bytes], check: Callable[[], None]) -> Iterator[bytes]:
    """Pass ``chunks`` through, then call ``check`` *before* the consumer sees the end.

    Used to fail a put from inside its stream (dump exit status, changed file), which
    makes the store abandon the object instead of publishing it.
    """
    yield from chunks
    check()
