"""The example plugin on its own: found by forge-ci through its entry point, and
a store that keeps the basic promises (forge's own suite runs the full contract)."""

from __future__ import annotations

from pathlib import Path

import forge_dirstore
import pytest

from forge_ci.plugins import API_VERSION, find
from forge_ci.store import ObjectNotFoundError, open_store


def test_it_targets_the_plugin_api_forge_speaks() -> None:
    assert forge_dirstore.FORGE_PLUGIN_API == API_VERSION


def test_forge_finds_it_by_its_scheme(tmp_path: Path) -> None:
    assert find("forge_ci.stores", "dir") is forge_dirstore
    store = open_store(f"dir://{tmp_path}/backups")
    assert isinstance(store, forge_dirstore.DirStore)


def test_round_trip_and_missing(tmp_path: Path) -> None:
    store = forge_dirstore.open(f"dir://{tmp_path}")
    assert store.put("a/b", [b"one", b"two"]) == 6
    assert store.read_bytes("a/b") == b"onetwo"
    assert list(store.list("a/")) == ["a/b"]
    with pytest.raises(ObjectNotFoundError):
        store.get("nope")


def test_an_interrupted_put_leaves_nothing_visible(tmp_path: Path) -> None:
    store = forge_dirstore.open(f"dir://{tmp_path}")

    def broken() -> object:
        yield b"x" * 10
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError):
        store.put("k", broken())  # type: ignore[arg-type]
    assert list(store.list()) == [] and not any(tmp_path.rglob(".part-*"))


def test_a_relative_url_is_refused() -> None:
    with pytest.raises(ValueError, match="dir:///absolute/folder"):
        forge_dirstore.open("dir://relative/folder")
