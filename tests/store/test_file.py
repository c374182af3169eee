"""file:// specifics: temporary files stay invisible and are cleaned up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from forge_ci.store import StoreAccessError, open_store
from forge_ci.store.file import FileStore


def test_temp_file_of_a_killed_put_is_invisible_then_cleaned(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    store.put("data/ab/cd", [b"whole"])
    orphan = tmp_path / "root" / "data" / "ab" / ".tmp-killed.part"
    orphan.write_bytes(b"half")
    assert sorted(store.list()) == ["data/ab/cd"]
    assert store.cleanup(older_than=3600) == 0  # could still be in flight
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    assert store.cleanup(older_than=3600) == 1
    assert not orphan.exists() and store.read_bytes("data/ab/cd") == b"whole"


def test_foreign_files_are_not_listed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "dir with space").mkdir()
    store.put("k", [b"v"])
    assert "k" in list(store.list())
    assert ".DS_Store" not in list(store.list())


def test_put_creates_the_root_and_objects_are_private(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/new/root")
    store.check()  # a missing root is fine: the first put creates it
    store.put("snapshots/site/prod/1", [b"manifest"])
    path = tmp_path / "new" / "root" / "snapshots" / "site" / "prod" / "1"
    assert path.read_bytes() == b"manifest"
    assert path.stat().st_mode & 0o077 == 0


def test_check_refuses_a_file_as_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreAccessError, match="not a writable directory"):
        FileStore(tmp_path / "file" / "sub").check()
