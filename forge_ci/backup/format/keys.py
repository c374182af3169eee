"""age keys: X25519 key pairs and the recipient stanzas they produce.

This module is the key half of the age v1 format (https://age-encryption.org/v1);
:mod:`forge_ci.backup.format.age` is the file half (header, MAC, payload) and
re-exports the public names below. X25519 is the only recipient type: passphrase
(scrypt), ssh and plugin stanzas are addressed to no identity here, so a file that
has only those fails with :class:`NoIdentityError`.

Text forms are those of the reference ``age`` / ``age-keygen`` tools:

* recipient (public, enough to write backups): ``age1...`` (Bech32, HRP ``age``)
* identity (private, needed to read them): ``AGE-SECRET-KEY-1...`` (HRP ``AGE-SECRET-KEY-``)

Secrets never print themselves: identities and :class:`Secret`
have a redacted ``repr``/``str``, and parse errors name the source and line only.

Recipient contract (used by :class:`forge_ci.backup.format.age.Encryptor`):
``wrap(file_key)`` returns the stanzas that let the matching identity recover the 16-byte file key.
Identity contract (used by the decryptor): ``unwrap(stanzas)`` returns the file key,
``None`` when no stanza is addressed to it, and raises :class:`BackupFormatError` when
a stanza of its type is malformed (the spec says such a header MUST be rejected).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from forge_ci.backup.errors import BackupFormatError, KeyFormatError

FILE_KEY_SIZE = 16
RECIPIENT_ENV = "FORGE_BACKUP_RECIPIENT"
IDENTITY_ENV = "FORGE_BACKUP_IDENTITY"

_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "age-secret-key-"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)


class Secret:
    """A string that never prints itself; ``reveal()`` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not picklable")


# --- base64 as the spec wants it: standard alphabet, no padding, canonical -------

_B64_RE = re.compile(r"[A-Za-z0-9+/]*")


def b64encode_raw(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode_canonical(text: str) -> bytes:
    """Decode unpadded base64, refusing padding, stray characters and non-zero
    trailing bits (two encodings of one value would make files malleable)."""
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical unpadded base64")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not canonical unpadded base64") from None
    if b64encode_raw(data) != text:
        raise ValueError("not canonical unpadded base64")
    return data


# --- Bech32 (BIP 173, without its 90-character limit, as age uses it) ------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ value
        for i, gen in enumerate(_BECH32_GEN):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], frm: int, to: int, *, pad: bool) -> list[int]:
    acc, bits, out, maxv = 0, 0, [], (1 << to) - 1
    for value in data:
        acc = ((acc << frm) | value) & ((1 << (frm + to)) - 1)
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to - bits)) & maxv)
    elif not pad and (bits >= frm or (acc << (to - bits)) & maxv):
        raise ValueError("bad bech32 padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode; the result is upper case when ``hrp`` is (age identities are)."""
    lower = hrp.lower()
    five = _convert_bits(data, 8, 5, pad=True)
    pm = _polymod([*_hrp_expand(lower), *five, 0, 0, 0, 0, 0, 0]) ^ 1
    check = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    text = lower + "1" + "".join(_BECH32_CHARSET[d] for d in five + check)
    return text.upper() if hrp.isupper() else text


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Return (lower-case hrp, data). Raises ValueError on any defect."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed-case bech32")
    lower = text.lower()
    pos = lower.rfind("1")
    if pos < 1 or pos + 7 > len(lower) or any(not 33 <= ord(c) <= 126 for c in lower):
        raise ValueError("malformed bech32")
    hrp, values = lower[:pos], [_BECH32_CHARSET.find(c) for c in lower[pos + 1 :]]
    if -1 in values or _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("bad bech32 checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))


# --- stanzas and the recipient / identity protocols -------------------------------


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza of an age header. ``args[0]`` is the type (``X25519``)."""

    args: tuple[str, ...]
    body: bytes = field(repr=False)


class Recipient(Protocol):
    def wrap(self, file_key: bytes) -> list[Stanza]: ...


class Identity(Protocol):
    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None: ...


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _seal_file_key(wrap_key: bytes, file_key: bytes) -> bytes:
    return ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)


def _open_file_key(wrap_key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


def _check_body(stanza: Stanza) -> None:
    # Length first, before any AEAD attempt: the spec's partitioning-oracle defence.
    if len(stanza.body) != FILE_KEY_SIZE + 16:
        raise BackupFormatError(f"malformed {stanza.args[0]} stanza: body is not 32 bytes")


def _stanza_arg(stanza: Stanza, index: int, size: int) -> bytes:
    try:
        value = b64decode_canonical(stanza.args[index])
    except ValueError:
        value = b""
    if len(value) != size:
        raise BackupFormatError(f"malformed {stanza.args[0]} stanza argument")
    return value


# --- X25519 -----------------------------------------------------------------------


@dataclass(frozen=True)
class X25519Recipient:
    """A public key, ``age1...``. Safe to print and to hand to CI."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")

    @classmethod
    def from_string(cls, text: str) -> X25519Recipient:
        """Parse ``age1...``; raises ValueError (message without the value)."""
        hrp, data = bech32_decode(text)
        if hrp != _RECIPIENT_HRP or len(data) != 32:
            raise ValueError("not an age X25519 recipient (age1...)")
        return cls(data)

    def __str__(self) -> str:
        return bech32_encode(_RECIPIENT_HRP, self.public_key)

    def __repr__(self) -> str:
        return f"X25519Recipient({self})"

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public_key))
        wrap_key = _hkdf(shared, share + self.public_key, _X25519_INFO)
        return [Stanza(("X25519", b64encode_raw(share)), _seal_file_key(wrap_key, file_key))]


class X25519Identity:
    """A private key, ``AGE-SECRET-KEY-1...``. Never printed: ``repr`` shows only the
    recipient; :meth:`to_secret` is the one explicit way to get the key text."""

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise ValueError("an X25519 private key is 32 bytes")
        self._key = X25519PrivateKey.from_private_bytes(private_key)
        self.recipient = X25519Recipient(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_string(cls, text: str) -> X25519Identity:
        """Parse ``AGE-SECRET-KEY-1...``; raises ValueError (message without the value)."""
        try:
            hrp, data = bech32_decode(text)
        except ValueError:
            raise ValueError("not an age identity (AGE-SECRET-KEY-1...)") from None
        if hrp != _IDENTITY_HRP or len(data) != 32:
            raise ValueError("not an age identity (AGE-SECRET-KEY-1...)")
        return cls(data)

    def to_secret(self) -> Secret:
        raw = self._key.private_bytes_raw()
        return Secret(bech32_encode(_IDENTITY_HRP.upper(), raw))

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient})"

    __str__ = __repr__

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.args[0] != "X25519":
                continue
            if len(stanza.args) != 2:
                raise BackupFormatError("malformed X25519 stanza: wrong argument count")
            share = _stanza_arg(stanza, 1, 32)
            _check_body(stanza)
            file_key = self._unwrap_one(share, stanza.body)
            if file_key is not None:
                return file_key
        return None

    def _unwrap_one(self, share: bytes, body: bytes) -> bytes | None:
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # OpenSSL refuses low-order points (all-zero secret)
            shared = bytes(32)
        if not any(shared):
            raise BackupFormatError("X25519 stanza has a low-order ephemeral share")
        wrap_key = _hkdf(shared, share + self.recipient.public_key, _X25519_INFO)
        return _open_file_key(wrap_key, body)


# --- parsing what users paste into FORGE_BACKUP_RECIPIENT / _IDENTITY ---------------


def generate_identity() -> X25519Identity:
    """A fresh key pair; ``identity.recipient`` is the public half."""
    return X25519Identity.generate()


def format_identity_file(identity: X25519Identity, created: datetime | None = None) -> Secret:
    """The identity as ``age-keygen`` writes it (comments, then the key), redacted."""
    stamp = (created or datetime.now(UTC)).replace(microsecond=0).isoformat()
    text = (
        f"# created: {stamp}\n# public key: {identity.recipient}\n{identity.to_secret().reveal()}\n"
    )
    return Secret(text)


def parse_recipients(text: str, *, source: str = RECIPIENT_ENV) -> list[X25519Recipient]:
    """Parse one or more ``age1...`` keys separated by whitespace, newlines or commas;
    ``#`` starts a comment to the end of the line (an age recipients file is valid)."""
    found: list[X25519Recipient] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for token in re.split(r"[\s,]+", line.split("#", 1)[0]):
            if token:
                found.append(_parse_recipient_token(token, source, lineno))
    if not found:
        raise KeyFormatError(
            f"{source} holds no recipient",
            hint="set it to a public key (age1...) from `forge-ci keygen`",
        )
    return found


def _parse_recipient_token(token: str, source: str, lineno: int) -> X25519Recipient:
    if token.upper().startswith("AGE-SECRET-KEY-"):
        raise KeyFormatError(
            f"{source} line {lineno}: this is a private key, not a recipient",
            hint=f"put the public key (age1...) in {source}; keep the private key in "
            f"{IDENTITY_ENV}, and rotate it since it was exposed to the backup job",
        )
    try:
        return X25519Recipient.from_string(token)
    except ValueError:
        raise KeyFormatError(
            f"{source} line {lineno}: not an age X25519 recipient",
            hint="expected age1... as printed by `forge-ci keygen` or `age-keygen -y`; "
            "ssh and post-quantum recipients are not supported",
        ) from None


def parse_identities(text: str | Secret, *, source: str = IDENTITY_ENV) -> list[X25519Identity]:
    """Parse an age identity file: one ``AGE-SECRET-KEY-1...`` per line, blank lines and
    ``#`` comment lines ignored (the output of ``age-keygen`` is accepted as is)."""
    raw = text.reveal() if isinstance(text, Secret) else text
    found: list[X25519Identity] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(X25519Identity.from_string(line))
        except ValueError:
            raise KeyFormatError(
                f"{source} line {lineno}: not an age identity",
                hint="expected AGE-SECRET-KEY-1... as written by `forge-ci keygen` or `age-keygen`",
            ) from None
    if not found:
        raise KeyFormatError(
            f"{source} holds no identity",
            hint="set it to the private key file written by `forge-ci keygen`",
        )
    return found

