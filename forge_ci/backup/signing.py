"""Who wrote a snapshot: Ed25519 signing keys, and the signature stored beside each manifest.

age has no sender authentication: whoever holds a recipient (the public key every
backup job holds) can seal a manifest. So the backup job also holds a *signing key*,
and forge.yml pins the public halves (``backup.signers``); a snapshot counts only when
its manifest is signed by one of them.

Text forms (standard base64, with padding, of the raw 32-byte keys)::

    forge-sign-ed25519:<base64 public key>            forge.yml backup.signers
    forge-sign-ed25519-secret:<base64 private seed>   FORGE_BACKUP_SIGNING_KEY

The secret may carry ``#`` comment lines (``forge-ci keygen --signing --output`` writes
the public key as one). Secrets never print themselves; errors name the source and
line, never the value.

What is signed: the bytes of :func:`message` - a context line, the manifest's key in
the store and the SHA-256 of the manifest's plaintext - so a signature is bound to one
snapshot of one site and environment and cannot be replayed under another name. It is
stored, like every object, as age(zstd(JSON)) under ``signatures/<site>/<env>/<id>``::

    {"format": "forge-ci signature", "version": 1,
     "snapshot": "snapshots/<site>/<env>/<id>", "manifest_sha256": "<64 hex>",
     "signer": "forge-sign-ed25519:...", "signature": "<base64, 64 bytes>"}

``snapshot`` and ``manifest_sha256`` are there for people; a reader recomputes both
from the manifest it actually read and checks the signature with each pinned key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from forge_ci.backup.errors import KeyFormatError
from forge_ci.backup.format.keys import Secret

SIGNING_KEY_ENV = "FORGE_BACKUP_SIGNING_KEY"
PUBLIC_PREFIX = "forge-sign-ed25519:"
SECRET_PREFIX = "forge-sign-ed25519-secret:"  # noqa: S105 - a prefix, not a secret
CONTEXT = "forge-ci snapshot signature v1"
FORMAT = "forge-ci signature"
VERSION = 1
_B64_32 = re.compile(r"^[A-Za-z0-9+/]{43}=$")
_B64_64 = re.compile(r"^[A-Za-z0-9+/]{86}==$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _decode32(text: str) -> bytes:
    if not _B64_32.match(text):
        raise ValueError("not 32 bytes of standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not 32 bytes of standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


@dataclass(frozen=True)
class SignerKey:
    """A public signing key, ``forge-sign-ed25519:...``: safe to print and to pin."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @classmethod
    def from_string(cls, text: str) -> SignerKey:
        """Parse; ValueError (naming the expected form, never the value) if malformed."""
        if not text.startswith(PUBLIC_PREFIX):
            raise ValueError(f"a signer is {PUBLIC_PREFIX}<base64> "
                             "(from `forge-ci keygen --signing`)")
        try:
            return cls(_decode32(text[len(PUBLIC_PREFIX):]))
        except ValueError:
            raise ValueError(f"a signer is {PUBLIC_PREFIX} and 44 characters of base64 "
                             "(from `forge-ci keygen --signing`)") from None

    def __str__(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.raw).decode("ascii")

    def __repr__(self) -> str:
        return f"SignerKey({self})"

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    """A private signing key. Never printed: ``repr`` shows only the public half."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = SignerKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def to_secret(self) -> Secret:
        return Secret(SECRET_PREFIX
                      + base64.b64encode(self._key.private_bytes_raw()).decode("ascii"))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public})"

    __str__ = __repr__


def format_signing_key_file(key: SigningKey) -> Secret:
    """The secret as ``keygen --signing`` writes it: the public key as a comment, then
    the private line. Paste all of it (or just the last line) into the secret."""
    return Secret(f"# public key (forge.yml backup.signers): {key.public}\n"
                  f"{key.to_secret().reveal()}\n")


def parse_signing_key(text: Secret, *, source: str = SIGNING_KEY_ENV) -> SigningKey:
    """Exactly one ``forge-sign-ed25519-secret:`` line; blank and ``#`` lines ignored."""
    found: list[SigningKey] = []
    for lineno, line in enumerate(text.reveal().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(PUBLIC_PREFIX):
            raise KeyFormatError(
                f"{source} line {lineno}: this is a public signing key, not the private one",
                hint="the public key goes into forge.yml's backup.signers; the secret "
                     f"holds the {SECRET_PREFIX} line from `forge-ci keygen --signing`")
        try:
            if not line.startswith(SECRET_PREFIX):
                raise ValueError
            found.append(SigningKey(_decode32(line[len(SECRET_PREFIX):])))
        except ValueError:
            raise KeyFormatError(
                f"{source} line {lineno}: not a forge signing key",
                hint=f"expected {SECRET_PREFIX}<base64> as written by "
                     "`forge-ci keygen --signing`") from None
    if len(found) != 1:
        raise KeyFormatError(
            f"{source} holds {'no' if not found else 'more than one'} signing key",
            hint="set it to the one key written by `forge-ci keygen --signing`")
    return found[0]


# --- the signature object ---------------------------------------------------------


def message(snapshot_key: str, manifest_sha256: str) -> bytes:
    """The exact bytes signed (three lines, each ending in a newline)."""
    return f"{CONTEXT}\n{snapshot_key}\n{manifest_sha256}\n".encode("ascii")


def sign(key: SigningKey, snapshot_key: str, manifest: bytes) -> bytes:
    """The signature object's plaintext for ``manifest`` stored under ``snapshot_key``."""
    return sign_digest(key, snapshot_key, hashlib.sha256(manifest).hexdigest())


def sign_digest(key: SigningKey, snapshot_key: str, digest: str) -> bytes:
    """:func:`sign` from the manifest's SHA-256 (hex): a manifest written as a stream
    is hashed as it is produced, never held whole."""
    doc = {"format": FORMAT, "version": VERSION, "snapshot": snapshot_key,
           "manifest_sha256": digest, "signer": str(key.public),
           "signature": base64.b64encode(key.sign(message(snapshot_key, digest))).decode()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class Checked:
    """The outcome of checking a signature: ``signer`` is set only when it holds."""

    signer: SignerKey | None
    problem: str | None


def check(blob: bytes, snapshot_key: str, manifest_sha256: str,
          pinned: Sequence[SignerKey]) -> Checked:
    """Check a signature object against the manifest read from ``snapshot_key``."""
    try:
        doc: Any = json.loads(blob.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT \
                or doc.get("version") != VERSION:
            raise ValueError
        sig_text, claimed, named = doc["signature"], doc["signer"], doc["snapshot"]
        if not (isinstance(sig_text, str) and _B64_64.match(sig_text)
                and isinstance(claimed, str) and isinstance(named, str)):
            raise ValueError
        signature = base64.b64decode(sig_text, validate=True)
        signer = SignerKey.from_string(claimed)
    except (ValueError, KeyError, UnicodeDecodeError, binascii.Error):
        return Checked(None, "its signature object is malformed")
    if named != snapshot_key:
        return Checked(None, f"its signature was made for {named!r}")
    if doc.get("manifest_sha256") != manifest_sha256:
        return Checked(None, "the manifest changed after it was signed")
    data = message(snapshot_key, manifest_sha256)
    if signer not in pinned:
        if signer.verify(data, signature):
            return Checked(None, f"signed by {signer}, which is not in backup.signers")
        return Checked(None, "its signature does not verify")
    if not signer.verify(data, signature):
        return Checked(None, "its signature does not verify")
    return Checked(signer, None)
