"""Where things live in a store, and how data objects are named.

::

    snapshots/<site>/<environment>/<snapshot-id>   manifest: written last, it *is* the snapshot
    verified/<site>/<environment>/<snapshot-id>    written by `verify` when every object checked out
    data/<2 hex>/<64 hex>                          file contents and database dumps
    locks/<shared|exclusive>-<unix time>-<hex>     held while a backup or a prune runs

Every object, whatever its key, is an age file whose plaintext is a zstd stream.

Data object names
-----------------
A file's object is named ``HMAC-SHA256(naming key, "forge-ci file\\0" || SHA-256(content))``.
The naming key is derived (HKDF-SHA256) from the sorted set of backup recipients:

* backing up needs only the recipients (public keys), so CI can compute names and
  skip content the store already holds (dedup) without any secret;
* someone with only read access to the bucket cannot test "does this backup contain
  file X" (they would need the recipient), and names say nothing about paths;
* a different recipient set gives different names, so content is never "deduplicated"
  into an object the new recipients could not decrypt: rotating keys re-uploads.

Database dumps get a random name (their hash is unknown until the stream ends, and
they change every night anyway). What a bucket reader *does* learn: the number and
sizes of objects (a stored JPEG's object is its size plus ~0.2 %), upload times,
which objects appear in several snapshots' time ranges, and the site and environment
names and snapshot times from the ``snapshots/`` keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SNAPSHOTS = "snapshots/"
VERIFIED = "verified/"
DATA = "data/"
LOCKS = "locks/"

_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_DATA_KEY = re.compile(r"^data/([0-9a-f]{2})/([0-9a-f]{64})$")
_NAMING_SALT = b"forge-ci backup object names"
_NAMING_INFO = b"forge-ci/v1 naming key"
_FILE_LABEL = b"forge-ci file\x00"


def naming_key(recipients: Iterable[object]) -> bytes:
    """The HMAC key for data object names, from the recipients' ``age1...`` strings."""
    names = sorted({str(r) for r in recipients})
    if not names:
        raise ValueError("at least one recipient is needed to name objects")
    material = "\n".join(names).encode("ascii")
    return HKDF(algorithm=SHA256(), length=32, salt=_NAMING_SALT,
                info=_NAMING_INFO).derive(material)


def content_key(key: bytes, sha256_hex: str) -> str:
    """The data object key for content whose SHA-256 is ``sha256_hex``."""
    digest = bytes.fromhex(sha256_hex)
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    name = hmac.new(key, _FILE_LABEL + digest, hashlib.sha256).hexdigest()
    return f"{DATA}{name[:2]}/{name}"


def random_data_key() -> str:
    name = os.urandom(32).hex()
    return f"{DATA}{name[:2]}/{name}"


def is_data_key(key: str) -> bool:
    m = _DATA_KEY.match(key)
    return bool(m and m.group(2).startswith(m.group(1)))


def new_snapshot_id(now: datetime) -> str:
    """``20240115T031502Z-3f9a1c2b``: sorts by time, random tail against collisions."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(4).hex()}"


def is_snapshot_id(value: str) -> bool:
    return bool(_ID.match(value))


def id_time(snapshot_id: str) -> datetime:
    """The (unauthenticated, second-precision) time encoded in an id."""
    m = _ID.match(snapshot_id)
    if not m:
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def group_prefix(site: str, environment: str) -> str:
    return f"{site}/{environment}/"


def manifest_key(site: str, environment: str, snapshot_id: str) -> str:
    return f"{SNAPSHOTS}{group_prefix(site, environment)}{snapshot_id}"


def verified_key(site: str, environment: str, snapshot_id: str) -> str:
    return f"{VERIFIED}{group_prefix(site, environment)}{snapshot_id}"


def parse_group_key(key: str, top: str) -> tuple[str, str, str] | None:
    """(site, environment, id) of a ``snapshots/`` or ``verified/`` key, else None."""
    if not key.startswith(top):
        return None
    parts = key[len(top):].split("/")
    if len(parts) != 3 or not is_snapshot_id(parts[2]):
        return None
    return parts[0], parts[1], parts[2]
