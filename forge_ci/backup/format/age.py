"""Streaming age v1 encryption (https://age-encryption.org/v1, C2SP age.md).

Every object forge stores is a plain binary age file, so the reference tools read it::

    age -d -i identity.txt OBJECT | zstd -d > plain

File layout (all of it written by :class:`Encryptor`)::

    age-encryption.org/v1\\n                      version line
    -> X25519 <share>\\n<body>\\n                  one stanza per recipient
    --- <HMAC-SHA256 of the header so far>\\n    header MAC (HKDF(file key, "header"))
    <16-byte nonce>                              payload key = HKDF(file key, nonce, "payload")
    <chunk 0> ... <final chunk>                  64 KiB plaintext + 16-byte tag each

Chunks are ChaCha20-Poly1305 with nonce = 11-byte big-endian counter || last flag.
The final chunk carries flag 0x01, may be full size, and is empty only when the whole
plaintext is empty: that flag is what proves the stream was not truncated.

Authentication and partial data
-------------------------------
:func:`decrypt_iter` and :meth:`Decryptor.update` release plaintext one chunk at a
time, each chunk authenticated before it is released. That proves every byte seen so
far is genuine and in order, but *not* that nothing is missing at the end: truncation
is only detected when the input ends without a valid final chunk, i.e. by the
:class:`BackupFormatError` raised at the very end of the iteration (from
:meth:`Decryptor.finish`). A caller that must not act on partial data (restoring a
database dump into a live server, replacing files) must either spool the plaintext to
a temporary file and act only once the iterator finished, or run the whole stream
through :func:`decrypt_iter` once to authenticate it, then decrypt again and act.

Recipients are X25519 keys only (:mod:`forge_ci.backup.format.keys`); the files are
standard age all the same, so any age implementation opens them.

Memory stays flat: at most one encrypted chunk plus one caller chunk (callers' chunks
are sliced to ``MAX_UPDATE``) is held, whatever the stream size.

Errors: :class:`BackupFormatError` (not age, damaged, truncated, trailing data,
tampered, hostile header) and :class:`NoIdentityError` (no identity opens the file).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from forge_ci.backup.errors import BackupFormatError, NoIdentityError
from forge_ci.backup.format.keys import (
    FILE_KEY_SIZE,
    Identity,
    Recipient,
    Secret,
    Stanza,
    X25519Identity,
    X25519Recipient,
    _hkdf,
    b64decode_canonical,
    b64encode_raw,
)

__all__ = [
    "CHUNK_SIZE",
    "Decryptor",
    "Encryptor",
    "Identity",
    "Recipient",
    "Secret",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_into",
    "decrypt_iter",
    "encrypt_iter",
]

VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
MAX_HEADER_SIZE = 64 * 1024  # a real header with a few recipients is < 1 KiB
MAX_STANZAS = 128
MAX_UPDATE = 1024 * 1024  # slice big caller chunks so output stays bounded
_COLUMNS = 64
_MAX_COUNTER = 1 << 88


# --- header -------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---"


def _header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), mac_input, hashlib.sha256).digest()


def _is_vchar_arg(arg: str) -> bool:
    return bool(arg) and all(0x21 <= ord(c) <= 0x7E for c in arg)


def _encode_stanza(stanza: Stanza) -> bytes:
    if not stanza.args or not all(_is_vchar_arg(a) for a in stanza.args):
        raise ValueError("stanza arguments must be non-empty printable ASCII without spaces")
    body = b64encode_raw(stanza.body)
    lines = [body[i : i + _COLUMNS] for i in range(0, len(body), _COLUMNS)]
    if not lines or len(lines[-1]) == _COLUMNS:
        lines.append("")  # the body always ends with a line shorter than 64 columns
    return ("-> " + " ".join(stanza.args) + "\n" + "\n".join(lines) + "\n").encode("ascii")


def encode_header(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    mac_input = VERSION_LINE + b"".join(_encode_stanza(s) for s in stanzas) + b"---"
    mac = _header_mac(file_key, mac_input)
    return mac_input + b" " + b64encode_raw(mac).encode("ascii") + b"\n"


def _bad_header(why: str) -> BackupFormatError:
    return BackupFormatError(f"invalid age header: {why}")


def parse_header(data: bytes) -> Header:
    """Parse a complete header (through the MAC line's LF), strictly per the ABNF."""
    try:
        lines = data.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise _bad_header("non-ASCII bytes") from None
    if lines[0] != VERSION_LINE[:-1].decode():
        raise _bad_header("not an age v1 file")
    if lines[-1] != "":
        raise _bad_header("missing final line feed")
    stanzas, i = [], 1
    while i < len(lines) and lines[i].startswith("-> "):
        stanza, i = _parse_stanza(lines, i)
        stanzas.append(stanza)
        if len(stanzas) > MAX_STANZAS:
            raise _bad_header(f"more than {MAX_STANZAS} recipient stanzas")
    if not stanzas:
        raise _bad_header("no recipient stanza")
    if i != len(lines) - 2 or not lines[i].startswith("--- "):
        raise _bad_header("malformed MAC line")
    try:
        mac = b64decode_canonical(lines[i][4:])
    except ValueError:
        mac = b""
    if len(mac) != 32:
        raise _bad_header("malformed MAC")
    mac_input = data[: len(data) - len(lines[i]) - 1 + 3]
    return Header(tuple(stanzas), mac, mac_input)


def _parse_stanza(lines: list[str], i: int) -> tuple[Stanza, int]:
    args = tuple(lines[i][3:].split(" "))
    if not all(_is_vchar_arg(a) for a in args):
        raise _bad_header("malformed stanza arguments")
    body_lines: list[str] = []
    while True:
        i += 1
        if i >= len(lines) - 1:
            raise _bad_header("stanza body not terminated")
        line = lines[i]
        if len(line) > _COLUMNS:
            raise _bad_header("stanza body line longer than 64 columns")
        body_lines.append(line)
        if len(line) < _COLUMNS:
            break
    try:
        body = b64decode_canonical("".join(body_lines))
    except ValueError:
        raise _bad_header("stanza body is not canonical base64") from None
    return Stanza(args, body), i + 1


def _unwrap(header: Header, identities: Sequence[Identity]) -> bytes:
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            if len(file_key) != FILE_KEY_SIZE:
                raise _bad_header("wrapped file key has the wrong size")
            return file_key
    raise NoIdentityError()


# --- payload ------------------------------------------------------------------------


class _Stream:
    """The STREAM construction: one ChaCha20-Poly1305 call per chunk."""

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self.counter = 0

    def _nonce(self, last: bool) -> bytes:
        if self.counter >= _MAX_COUNTER:
            raise BackupFormatError("age payload chunk counter overflow")
        return self.counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")

    def seal(self, chunk: bytes | memoryview, *, last: bool) -> bytes:
        out = self._aead.encrypt(self._nonce(last), chunk, None)
        self.counter += 1
        return out

    def open_into(self, chunk: bytes | bytearray | memoryview, out: memoryview, *,
                  last: bool) -> bool:
        """Like :meth:`open`, the plaintext written to ``out`` (exactly its size)."""
        try:
            self._aead.decrypt_into(self._nonce(last), chunk, None, out)
        except InvalidTag:
            return False
        self.counter += 1
        return True

    def open(self, chunk: bytes | memoryview, *, last: bool) -> bytes | None:
        try:
            out = self._aead.decrypt(self._nonce(last), chunk, None)
        except InvalidTag:
            return None
        self.counter += 1
        return out


def _slices(data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    view = memoryview(data)
    for pos in range(0, len(view), MAX_UPDATE):
        yield view[pos : pos + MAX_UPDATE]


class Encryptor:
    """Push-style encryptor: ``update()`` any number of times, then ``finish()`` once.

    The output of every call, concatenated, is one age file. ``update`` returns
    whatever is ready (the header comes with the first output); at most one chunk is
    buffered. Raises ValueError on misuse (no recipients).
    """

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise ValueError("at least one recipient is required")
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = [s for r in recipients for s in r.wrap(file_key)]
        nonce = os.urandom(NONCE_SIZE)
        self._pending = encode_header(stanzas, file_key) + nonce
        self._stream = _Stream(file_key, nonce)
        self._buf = bytearray()
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_pieces(data))

    def update_pieces(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like :meth:`update`, as a list of pieces (a chunk each): full chunks are
        sealed straight from ``data``, only a partial one is copied aside."""
        if self._done:
            raise ValueError("update() after finish()")
        out = [self._take_pending()]
        with memoryview(data) as whole, whole.cast("B") as view:
            pos, size = 0, len(view)
            if self._buf:
                # Top up the chunk held back; seal it once more bytes are known to follow.
                pos = min(size, CHUNK_SIZE - len(self._buf))
                self._buf += view[:pos]
                if pos == size:
                    return [p for p in out if p]
                out.append(self._stream.seal(bytes(self._buf), last=False))
                self._buf.clear()
            # Seal only chunks known not to be last: more bytes follow them.
            while size - pos > CHUNK_SIZE:
                out.append(self._stream.seal(view[pos : pos + CHUNK_SIZE], last=False))
                pos += CHUNK_SIZE
            self._buf += view[pos:]
        return [p for p in out if p]

    def finish(self) -> bytes:
        if self._done:
            raise ValueError("finish() called twice")
        self._done = True
        # Empty only if the whole plaintext was empty; a full chunk stays full.
        last = self._stream.seal(bytes(self._buf), last=True)
        self._buf = bytearray()
        return self._take_pending() + last

    def _take_pending(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending


class Decryptor:
    """Push-style decryptor: ``update()`` with ciphertext, then ``finish()`` once.

    ``update`` returns authenticated plaintext as soon as a whole chunk is known not
    to be the last one; ``finish`` returns the final chunk and raises
    :class:`BackupFormatError` if the stream was truncated. See the module docstring
    for why callers that must not act on partial data need to wait for ``finish``.
    """

    def __init__(
        self, identities: Sequence[Identity], *, max_header_size: int = MAX_HEADER_SIZE
    ) -> None:
        if not identities:
            raise ValueError("at least one identity is required")
        self._identities = list(identities)
        self._max_header = max_header_size
        self._buf = bytearray()
        self._scan_from = 0
        self._stream: _Stream | None = None
        self._file_key: bytes | None = None
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_pieces(data))

    def update_pieces(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like :meth:`update`, as a list of pieces (a chunk each), not joined."""
        if self._done:
            raise ValueError("update() after finish()")
        self._buf += data
        if self._file_key is None and not self._read_header():
            return []
        if self._stream is None and not self._read_nonce():
            return []
        return self._open_ready()

    def finish(self) -> bytes:
        if self._done:
            raise ValueError("finish() called twice")
        self._done = True
        if self._stream is None:
            raise BackupFormatError("truncated age file: it ends inside the header")
        return self._open_final(bytes(self._buf))

    def _read_header(self) -> bool:
        head = bytes(self._buf[: len(VERSION_LINE)])
        if not VERSION_LINE.startswith(head):
            raise _bad_header("not an age v1 file (armored and other versions unsupported)")
        idx = self._buf.find(b"\n---", self._scan_from)
        end = -1 if idx < 0 else self._buf.find(b"\n", idx + 1)
        if end < 0:
            if len(self._buf) > self._max_header:
                raise _bad_header(f"larger than {self._max_header} bytes")
            # Resume the search where it can still match, not from the start.
            self._scan_from = idx if idx >= 0 else max(0, len(self._buf) - 4)
            return False
        if end + 1 > self._max_header:
            raise _bad_header(f"larger than {self._max_header} bytes")
        header = parse_header(bytes(self._buf[: end + 1]))
        file_key = _unwrap(header, self._identities)
        if not hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
            raise _bad_header("MAC mismatch: the header was modified")
        self._file_key = file_key
        del self._buf[: end + 1]
        return True

    def _read_nonce(self) -> bool:
        if len(self._buf) < NONCE_SIZE or self._file_key is None:
            return False
        self._stream = _Stream(self._file_key, bytes(self._buf[:NONCE_SIZE]))
        del self._buf[:NONCE_SIZE]
        return True

    def update_into(self, data: bytes | bytearray | memoryview, out: memoryview) -> int:
        """Like :meth:`update`, the plaintext written to ``out`` instead of returned:
        how many bytes were written (from ``out``'s start). ``out`` must have room for
        every chunk ready (:class:`BackupFormatError` otherwise, ``out`` unspecified).

        Whole chunks are opened straight from ``data``: only the bytes of a chunk
        that straddles two calls (and the header) are copied aside, not every byte."""
        if self._done:
            raise ValueError("update() after finish()")
        if self._stream is None:
            self._buf += data
            if self._file_key is None and not self._read_header():
                return 0
            if self._stream is None and not self._read_nonce():
                return 0
            # What follows the header is opened as if given now (self._buf holds
            # at most a partial chunk from here on).
            data, self._buf = bytes(self._buf), bytearray()
        done = 0
        with memoryview(data) as whole, whole.cast("B") as view:
            pos, size = 0, len(view)
            if self._buf:  # a chunk begun by an earlier call: top it up from data
                pos = min(size, ENC_CHUNK_SIZE - len(self._buf))
                self._buf += view[:pos]
                if pos == size:  # nothing follows it yet: it may be the last
                    return 0
                with memoryview(self._buf) as held:
                    self._open_middle_into(held, _room(out, done, CHUNK_SIZE))
                self._buf.clear()
                done += CHUNK_SIZE
            # Open only chunks known not to be last: more bytes follow them.
            while size - pos > ENC_CHUNK_SIZE:
                self._open_middle_into(view[pos : pos + ENC_CHUNK_SIZE],
                                       _room(out, done, CHUNK_SIZE))
                pos += ENC_CHUNK_SIZE
                done += CHUNK_SIZE
            self._buf += view[pos:]
        return done

    def finish_into(self, out: memoryview) -> int:
        """Like :meth:`finish`, the final chunk written to ``out``: its size."""
        if self._done:
            raise ValueError("finish() called twice")
        self._done = True
        stream = self._stream
        if stream is None:
            raise BackupFormatError("truncated age file: it ends inside the header")
        chunk = bytes(self._buf)
        if len(chunk) < TAG_SIZE or (len(chunk) == TAG_SIZE and stream.counter > 0):
            return len(self._open_final(chunk))  # raises the right error
        size = len(chunk) - TAG_SIZE
        if not stream.open_into(chunk, _room(out, 0, size), last=True):
            self._open_final(chunk)  # raises the right error
        return size

    def _open_middle_into(self, chunk: memoryview, out: memoryview) -> None:
        assert self._stream is not None
        if not self._stream.open_into(chunk, out, last=False):
            self._open_middle(chunk)  # raises the right error

    def _open_ready(self) -> list[bytes]:
        assert self._stream is not None
        out, pos, size = [], 0, len(self._buf)
        with memoryview(self._buf) as view:
            # A chunk followed by more bytes must be a non-final chunk.
            while size - pos > ENC_CHUNK_SIZE:
                out.append(self._open_middle(view[pos : pos + ENC_CHUNK_SIZE]))
                pos += ENC_CHUNK_SIZE
        del self._buf[:pos]
        return out

    def _open_middle(self, chunk: memoryview) -> bytes:
        assert self._stream is not None
        plain = self._stream.open(chunk, last=False)
        if plain is not None:
            return plain
        if self._stream.open(chunk, last=True) is not None:
            raise BackupFormatError("trailing data after the final age chunk")
        raise self._chunk_error()

    def _open_final(self, chunk: bytes) -> bytes:
        stream = self._stream
        assert stream is not None
        if len(chunk) < TAG_SIZE:
            raise BackupFormatError(
                f"truncated age payload: no final chunk after chunk {stream.counter}"
            )
        if len(chunk) == TAG_SIZE and stream.counter > 0:
            raise BackupFormatError("invalid age payload: empty final chunk after data")
        plain = stream.open(chunk, last=True)
        if plain is not None:
            return plain
        if len(chunk) == ENC_CHUNK_SIZE and stream.open(chunk, last=False) is not None:
            raise BackupFormatError(
                f"truncated age payload: it stops after chunk {stream.counter - 1} "
                "without a final chunk"
            )
        raise self._chunk_error()

    def _chunk_error(self) -> BackupFormatError:
        counter = self._stream.counter if self._stream else 0
        return BackupFormatError(
            f"age payload chunk {counter} failed authentication (corrupted, reordered or tampered)"
        )


class PlaintextTooLarge(BackupFormatError):
    """:func:`decrypt_into`: the plaintext does not fit the space given (the stream
    was not necessarily authentic: only its chunks before were authenticated)."""


def _room(out: memoryview, start: int, size: int) -> memoryview:
    if start + size > len(out):
        raise PlaintextTooLarge("age plaintext larger than the space given for it")
    return out[start : start + size]


# --- iterator API -----------------------------------------------------------------


def encrypt_iter(chunks: Iterable[bytes], recipients: Sequence[Recipient]) -> Iterator[bytes]:
    """Encrypt a plaintext stream to ``recipients``; yields the age file in pieces.

    Lazy: nothing is read before the first ``next()``. Empty pieces are not yielded.
    """
    enc = Encryptor(recipients)
    for chunk in chunks:
        for piece in _slices(chunk):
            out = enc.update(piece)
            if out:
                yield out
    yield enc.finish()


def decrypt_into(chunks: Iterable[bytes], identities: Sequence[Identity],
                 out: bytearray | memoryview) -> int:
    """Decrypt a whole age stream into ``out`` (from its start), authenticated to its
    final chunk; returns the plaintext's size. Nothing but ``out`` holds plaintext.
    A plaintext larger than ``out`` raises :class:`PlaintextTooLarge` (``out`` then
    holds nothing meaningful), as do the errors of :func:`decrypt_iter`."""
    dec = Decryptor(identities)
    size = 0
    with memoryview(out) as view:
        for chunk in chunks:
            for piece in _slices(chunk):
                size += dec.update_into(piece, view[size:])
        return size + dec.finish_into(view[size:])


def decrypt_iter(
    chunks: Iterable[bytes],
    identities: Sequence[Identity],
    *,
    max_header_size: int = MAX_HEADER_SIZE,
) -> Iterator[bytes]:
    """Decrypt an age stream; yields authenticated plaintext chunk by chunk.

    Raises :class:`BackupFormatError` / :class:`NoIdentityError` - possibly only at the
    end, after earlier chunks were yielded: see "Authentication and partial data".
    """
    dec = Decryptor(identities, max_header_size=max_header_size)
    for chunk in chunks:
        for piece in _slices(chunk):
            yield from dec.update_pieces(piece)
    last = dec.finish()
    if last:
        yield last

