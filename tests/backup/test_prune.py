"""Prune forgets by policy, keeps the newest verified snapshot, deletes only objects no
kept snapshot (of any environment sharing the store) references, and respects locks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from forge_ci.backup import layout
from forge_ci.backup.store_lock import StoreLock
from forge_ci.store.file import FileStore

from .conftest import Site, reference_decrypt


def _data(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in (store / "data").rglob("*") if p.is_file()}


def _manifest(site: Site, store: Path, environment: str, sid: str) -> dict:  # type: ignore[type-arg]
    blob = (store / layout.manifest_key("backup-lab", environment, sid)).read_bytes()
    return json.loads(reference_decrypt(site.identity_file, blob))


def _objects(doc: dict) -> set[str]:  # type: ignore[type-arg]
    keys = {k for f in doc["files"] if f["type"] == "file" for k in f["objects"]}
    return keys | {doc["database"]["object"]}


def test_prune_keeps_policy_and_newest_verified(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                                capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", retention="{ keep_last: 1 }", big=10_000)
    store = lab_dir / "store"
    # Staging shares the store (and most objects): pruning production must spare it.
    text = site.config.read_text()
    block = text[text.index("  production:"):]
    site.config.write_text(text + block.replace("  production:", "  staging:"))
    staging = site.json(capsys, "backup", "staging", read=False)["snapshot_id"]

    b1 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    only_b2 = site.uploads / "only-in-b2.bin"
    only_b2.write_bytes(b"only the second snapshot has me\n" * 1000)
    b2 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    only_b2.unlink()
    (site.uploads / "in-b3.txt").write_text("third\n")
    b3 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production", "--snapshot", b1) == 0

    docs = {s: _manifest(site, store, "production", s) for s in (b1, b2, b3)}
    staging_doc = _manifest(site, store, "staging", staging)
    doomed = _objects(docs[b2]) - _objects(docs[b1]) - _objects(docs[b3]) \
        - _objects(staging_doc)
    assert len(doomed) == 2  # b2's dump and the file only b2 has
    before = _data(store)

    plan = site.json(capsys, "prune", "production", "--dry-run")
    reasons = {s["id"]: s["reasons"] for s in plan["snapshots"]}
    assert reasons == {b3: ["last snapshot"], b2: [], b1: ["newest verified snapshot"]}
    assert plan["forget"] == [b2] and plan["delete_objects"] == 2
    assert _data(store) == before  # a dry run changes nothing

    assert site.run("prune", "production") == 0
    assert _data(store) == before - doomed
    assert not (store / layout.manifest_key("backup-lab", "production", b2)).exists()
    for sid in (b1, b3):
        assert site.run("verify", "production", "--snapshot", sid) == 0
    assert site.run("verify", "staging", "--snapshot", staging) == 0
    # b3 is verified now, so b1 no longer needs protecting: it goes, with its dump.
    second = site.json(capsys, "prune", "production")
    assert (second["forget"], second["newest_verified"]) == ([b1], b3)
    assert second["delete_objects"] == len(_objects(docs[b1]) - _objects(docs[b3])
                                           - _objects(staging_doc)) == 1
    assert site.json(capsys, "prune", "production")["delete_objects"] == 0


def test_locks_keep_backup_and_prune_apart(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                           capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    site.json(capsys, "backup", "production", read=False)
    store = FileStore(lab_dir / "store")
    with StoreLock(store, "exclusive", [site.identity.recipient], who="a prune"):
        assert site.run("backup", "production", read=False, capsys=capsys) == 1
        assert "a prune holds the store" in site.last_err
    with StoreLock(store, "shared", [site.identity.recipient], who="a backup"):
        assert site.run("prune", "production", capsys=capsys) == 1
        assert "a backup holds the store" in site.last_err
        # Backups share.
        assert site.run("backup", "production", read=False) == 0
    # A crashed run's lock goes stale: ignored, then removed by prune.
    old = int(time.time()) - 7200
    store.put(f"locks/exclusive-{old}-{'0' * 16}", [b"x"])
    assert site.run("backup", "production", read=False) == 0
    assert site.json(capsys, "prune", "production")["stale_locks"] == 1
    assert list(store.list("locks/")) == []
