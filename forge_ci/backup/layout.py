"""Where things live in a store, and how data objects are named.

::

    snapshots/<site>/<environment>/<snapshot-id>   manifest: written last, it *is* the snapshot
    signatures/<site>/<environment>/<snapshot-id>  the manifest's signature, written just before it
    verified/<site>/<environment>/<snapshot-id>    written by `verify` when every object checked out
    data/<2 hex>/<64 hex>                          file contents, packs of small files, dumps
    index/<16 hex>/<32 hex>                        which pack holds which small file's content
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

Small files (see :mod:`forge_ci.backup.pack`) are not stored alone: their contents
go, one after the other, into *packs* with random names, and ``index/`` objects map
each content name to its pack and offset. Index objects are encrypted to a key
derived from the naming key, so a backup that holds only the recipients can read
them and skip what is stored; they hold content names, offsets and sizes only.

Database dumps and packs get random names (a dump's hash is unknown until the stream
ends). What a bucket reader *does* learn: the number and sizes of objects (a large
stored JPEG's object is its size plus ~0.2 %; small files hide inside packs),
upload times, and the site and environment names and snapshot times from the
``snapshots/`` keys.
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
SIGNATURES = "signatures/"
VERIFIED = "verified/"
DATA = "data/"
INDEX = "index/"
LOCKS = "locks/"

_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_DATA_KEY = re.compile(r"^data/([0-9a-f]{2})/([0-9a-f]{64})$")
_INDEX_KEY = re.compile(r"^index/([0-9a-f]{16})/([0-9a-f]{32})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAMING_SALT = b"forge-ci backup object names"
_NAMING_INFO = b"forge-ci/v1 naming key"
_FILE_LABEL = b"forge-ci file\x00"
_INDEX_INFO = b"forge-ci/v1 index identity"
_TAG_LABEL = b"forge-ci index tag\x00"


def naming_key(recipients: Iterable[object]) -> bytes:
    """The HMAC key for data object names, from the recipients' ``age1...`` strings."""
    names = sorted({str(r) for r in recipients})
    if not names:
        raise ValueError("at least one recipient is needed to name objects")
    material = "\n".join(names).encode("ascii")
    return HKDF(algorithm=SHA256(), length=32, salt=_NAMING_SALT,
                info=_NAMING_INFO).derive(material)


def content_name(key: bytes, sha256_hex: str) -> str:
    """The name (64 hex) of content whose SHA-256 is ``sha256_hex``: its object's key
    when stored alone (:func:`data_key`), its index entry when packed."""
    digest = bytes.fromhex(sha256_hex)
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    return hmac.new(key, _FILE_LABEL + digest, hashlib.sha256).hexdigest()


def data_key(name: str) -> str:
    if not _HEX64.match(name):
        raise ValueError("a data object name is 64 hex digits")
    return f"{DATA}{name[:2]}/{name}"


def index_secret(key: bytes) -> bytes:
    """The X25519 private key index objects are encrypted to, derived from the naming
    key: whoever can name objects (holds the recipients) can read the index, which
    says no more than the names themselves (see FORMAT.md)."""
    return HKDF(algorithm=SHA256(), length=32, salt=_NAMING_SALT,
                info=_INDEX_INFO).derive(key)


def index_prefix(key: bytes) -> str:
    """``index/<tag>/``: the index objects of one recipient set."""
    tag = hmac.new(key, _TAG_LABEL, hashlib.sha256).hexdigest()[:16]
    return f"{INDEX}{tag}/"


def new_index_key(key: bytes) -> str:
    return f"{index_prefix(key)}{os.urandom(16).hex()}"


def is_index_key(key: str) -> bool:
    return bool(_INDEX_KEY.match(key))


def random_data_key() -> str:
    name = os.urandom(32).hex()
    return f"{DATA}{name[:2]}/{name}"


def is_data_key(key: str) -> bool:
    m = _DATA_KEY.match(key)
    return bool(m and m.group(2).startswith(m.group(1)))


def new_snapshot_id(now: datetime, taken: Iterable[str] = ()) -> str:
    """``20240115T031502Z-3f9a1c2b``: sorts by time, random tail against collisions.

    ``taken``: the ids already in the store. Ids sort by the second, so a snapshot made
    in the same second as another gets a tail that sorts after every one of that second:
    "latest" stays the newest. A first tail leaves half the space for those.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    tail = int.from_bytes(os.urandom(4), "big") >> 1
    same = [int(t.split("-")[1], 16) for t in taken
            if t.startswith(stamp + "-") and is_snapshot_id(t)]
    if same and max(same) < 0xFFFFFFFF:
        last = max(same)
        # A small step keeps room for many more in the same second.
        tail = last + 1 + tail % min(0xFFFFFFFF - last, 1 << 16)
    return f"{stamp}-{tail:08x}"


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


def signature_key(site: str, environment: str, snapshot_id: str) -> str:
    return f"{SIGNATURES}{group_prefix(site, environment)}{snapshot_id}"


def parse_group_key(key: str, top: str) -> tuple[str, str, str] | None:
    """(site, environment, id) of a ``snapshots/``, ``signatures/`` or ``verified/`` key,
    else None."""
    if not key.startswith(top):
        return None
    parts = key[len(top):].split("/")
    if len(parts) != 3 or not is_snapshot_id(parts[2]):
        return None
    return parts[0], parts[1], parts[2]
