"""Files whose bytes differ from the hash the plan used (changed while the backup ran)
are never published under the planned name: they are hashed and sent again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forge_ci.backup import files
from forge_ci.backup.errors import SourceChanged
from forge_ci.backup.index import BlobIndex
from forge_ci.backup.pack import PackWriter
from forge_ci.backup.repo import Repository
from forge_ci.backup.scan import CACHE_PATH, HashCache, hash_files, list_tree
from forge_ci.backup.uploader import Uploader
from forge_ci.remote import LocalHost
from forge_ci.store.memory import MemoryStore

from .conftest import Site, fill_uploads

STALE = ["0" * 64, "1" * 64]
PATHS = ("shared/web/app/uploads",)


def _poison(root: Path, *names: str) -> None:
    """Make the host's hash cache claim wrong hashes for these files (same metadata):
    exactly what the plan sees when a file changes after it was hashed."""
    cache = root / CACHE_PATH
    doc = json.loads(cache.read_text())
    for name, stale in zip(names, STALE, strict=False):
        doc["entries"][f"{PATHS[0]}/{name}"][4] = stale
    cache.write_text(json.dumps(doc))


def test_changed_files_are_read_again(make_site, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site: Site = make_site(store="file")
    site.json(capsys, "backup", "production", read=False)
    # The plan believes two files (one small, one streamed) changed to content the
    # store lacks; the bytes tar sends disagree, so both are hashed and planned again.
    _poison(site.root, "a b.jpg", "2024/01/big.bin")
    report = site.json(capsys, "backup", "production", read=False)
    assert report["upload_files"] == 2  # what the (wrong) plan wanted to send
    assert report["new_objects"] == 1  # only the dump: the real contents were stored
    assert "changed while being read" in site.last_err
    assert site.run("verify", "production") == 0


def test_a_file_that_keeps_changing_fails_the_backup(lab_dir: Path) -> None:
    root = lab_dir / "env"
    fill_uploads(root / PATHS[0], big=2_000_000)
    host = LocalHost()
    from forge_ci.backup.format.keys import generate_identity

    repo = Repository(MemoryStore(), "s", "e", recipients=[generate_identity().recipient])
    key = repo.naming_key()
    listing = [st for st in list_tree(host, str(root), list(PATHS)) if st.kind == "file"]
    hashes = hash_files(host, str(root), [st.path for st in listing])
    HashCache.of(listing, hashes).save(host, str(root))
    _poison(root, "2024/01/big.bin", "a b.jpg")
    index = BlobIndex(set())
    plan = files.plan(host, str(root), PATHS, key, index, HashCache.load(host, str(root)))
    with Uploader(repo) as uploader, pytest.raises(SourceChanged, match="kept changing"):
        files.upload(host, str(root), plan, key, index, uploader,
                     PackWriter(uploader, repo.recipients), rounds=1)
    # Nothing was stored under a name its bytes do not hash to: not alone, not packed.
    stale = {files.layout.content_name(key, s) for s in STALE}
    assert not {files.layout.data_key(n) for n in stale} & set(repo.store.list("data/"))
    assert not stale & set(index.packed)
