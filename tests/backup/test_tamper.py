"""A flipped byte anywhere makes verify fail and restore refuse, leaving live data alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_ci.backup.pack import SEGMENT

from .conftest import Site, db_state, tree_state


def _objects(store: Path) -> list[Path]:
    # Everything the snapshot consists of (verify markers, locks and the upload index
    # are not part of it: restore never reads them).
    return sorted(p for p in store.rglob("*")
                  if p.is_file() and not {"locks", "verified", "index"} & set(p.parts))


def _flip(path: Path, where: str) -> int:
    data = bytearray(path.read_bytes())
    pos = {"header": 30, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    return pos


@pytest.mark.parametrize("where", ["header", "middle", "last"])
def test_any_flipped_byte_fails_verify_and_restore(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                                   capsys: pytest.CaptureFixture[str],
                                                   where: str) -> None:
    site: Site = make_site(store="file", big=SEGMENT + 500_000)
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production") == 0
    # Live data moves on after the snapshot; a refused restore must not touch it.
    site.server.sql("INSERT INTO posts (title, created) VALUES ('after', NOW());", site.db.name)
    (site.uploads / "after.txt").write_text("after the snapshot\n")
    live_db, live_files = db_state(site.server, site.db.name), tree_state(site.uploads)

    objects = _objects(lab_dir / "store")
    # The manifest and its signature, the dump, the big file's two segments, the small
    # ones' pack.
    assert len(objects) == 6
    for obj in objects:
        original = obj.read_bytes()
        _flip(obj, where)
        try:
            rc_verify = site.run("verify", "production", "--snapshot", sid, capsys=capsys)
            verify_err = site.last_err
            rc_restore = site.run("restore", "production", "--snapshot", sid, "--yes",
                                  capsys=capsys)
        finally:
            obj.write_bytes(original)
        assert rc_verify == 1, f"verify accepted a flipped byte in {obj}"
        assert "error" in verify_err
        assert rc_restore == 1, f"restore accepted a flipped byte in {obj}: {site.last_err}"
        assert db_state(site.server, site.db.name) == live_db, obj
        assert tree_state(site.uploads) == live_files, obj
        assert not list(site.root.glob(".forge/restore-*")), "staging left behind"
