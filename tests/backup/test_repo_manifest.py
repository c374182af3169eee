"""Reading a manifest: parsed as it is read and hashed, yet nothing parsed counts
before the object is authenticated and its signature checked (forge_ci/backup/repo.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from forge_ci.backup import layout, signing
from forge_ci.backup.errors import BackupFormatError, SnapshotNotFound, UntrustedSnapshot
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.repo import Repository, SnapshotRef
from forge_ci.backup.signing import SigningKey
from forge_ci.store.memory import MemoryStore

SID = layout.new_snapshot_id(datetime.now(UTC))


def _repo(signer: SigningKey) -> tuple[Repository, MemoryStore]:
    store = MemoryStore()
    identity = generate_identity()
    repo = Repository(store, "site", "production", identities=[identity],
                      signers=[signer.public])
    return repo, store


def _put(repo: Repository, text: bytes, signer: SigningKey | None) -> SnapshotRef:
    ref = SnapshotRef("site", "production", SID)
    repo.put(ref.key, [text], mode="compress")
    if signer is not None:
        repo.put(layout.signature_key("site", "production", SID),
                 [signing.sign(signer, ref.key, text)], mode="compress")
    return ref


@pytest.mark.parametrize("text", [b"not json at all", b'{"format": "forge-ci snapshot"}',
                                  b"[" * 100_000])
def test_an_unsigned_unparsable_manifest_is_named_untrusted(text: bytes) -> None:
    owner, stranger = SigningKey.generate(), SigningKey.generate()
    repo, _ = _repo(owner)
    for signer in (None, stranger):
        ref = _put(repo, text, signer)
        with pytest.raises(UntrustedSnapshot):
            repo.open_manifest(ref)


def test_a_signed_unparsable_manifest_is_a_format_error() -> None:
    owner = SigningKey.generate()
    repo, _ = _repo(owner)
    ref = _put(repo, json.dumps({"format": "forge-ci snapshot", "files": []}).encode(), owner)
    with pytest.raises(BackupFormatError, match="invalid snapshot manifest"):
        repo.open_manifest(ref)


def test_a_damaged_manifest_object_is_named_as_such_first() -> None:
    owner = SigningKey.generate()
    repo, store = _repo(owner)
    ref = _put(repo, b"x" * 300_000, owner)
    data = bytearray(b"".join(store.get(ref.key)))
    data[-40] ^= 1
    store.put(ref.key, [bytes(data)])
    with pytest.raises(BackupFormatError) as caught:
        repo.open_manifest(ref)
    assert "invalid snapshot manifest" not in caught.value.message
    store.delete(ref.key)
    with pytest.raises(SnapshotNotFound):
        repo.open_manifest(ref)
