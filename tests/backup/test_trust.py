"""Only the holder of a pinned signing key makes snapshots that count.

Each test replays an attack by someone who can write to the store - with the
recipient (every backup job has it), a signing key of their own, or nothing at all -
and checks what the owner sees: `snapshots`, `verify`, `restore` and `prune`."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_ci.backup import layout
from forge_ci.backup.signing import SigningKey
from forge_ci.store.file import FileStore

from . import forgery
from .conftest import Site


def _rows(site: Site, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in site.json(capsys, "snapshots", "production")["snapshots"]}


def _keys(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _flip_a_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_junk_under_snapshot_names_stops_prune_deleting_anything(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="s3", retention="{ keep_last: 1 }", big=10_000)
    b1 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    (site.uploads / "new.txt").write_text("only in b2\n")
    b2 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    junk = forgery.junk(site)  # no keys at all: PUT access to the bucket is enough
    store = forgery.store(site)
    before = set(store.list(""))

    for argv in (("prune", "production", "--dry-run"), ("prune", "production")):
        assert site.run(*argv, capsys=capsys) == 1
        assert "deletes nothing: 3 snapshot(s) cannot be trusted" in site.last_err
        for key in junk:
            assert key in site.last_err
        assert set(store.list("")) == before  # b1 was not forgotten, nothing deleted
    rows = _rows(site, capsys)
    assert {k: rows[k]["trust"] for k in (b1, b2)} == {b1: "signed", b2: "signed"}
    assert [rows[k.rsplit("/", 1)[1]]["trust"] for k in junk] == ["unreadable"] * 3

    # The junk is what stopped it: once removed, prune goes by its policy again.
    for key in junk:
        store.delete(key)
    assert site.json(capsys, "prune", "production")["forget"] == [b1]


def test_a_snapshot_forged_with_only_the_recipient_is_refused(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="s3", big=10_000)
    good = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    w = forgery.writer(site)
    planted = forgery.content(w, "shared/web/app/uploads/shell.php", b"<?php evil();\n")
    forged = forgery.forge(site, paths=("shared/web/app/uploads",), files=(planted,),
                           base=good)

    rows = _rows(site, capsys)
    assert rows[forged]["trust"] == "untrusted" and "not signed" in str(rows[forged]["error"])
    assert rows[good]["trust"] == "signed"
    assert site.run("verify", "production", "--snapshot", forged, capsys=capsys) == 1
    assert f"snapshot {forged} is not signed" in site.last_err
    # "latest" is the newest *trusted* snapshot; the forged one is named and skipped.
    report = site.json(capsys, "verify", "production")
    assert report["snapshot_id"] == good and forged in site.last_err
    assert site.run("restore", "production", "--snapshot", forged, "--yes",
                    capsys=capsys) == 1
    assert "not signed" in site.last_err
    assert site.json(capsys, "restore", "production", "--yes")["snapshot_id"] == good
    assert not (site.uploads / "shell.php").exists()
    assert site.run("prune", "production", capsys=capsys) == 1
    assert f"snapshots/backup-lab/production/{forged}: snapshot {forged} is not signed" \
        in site.last_err


def test_a_snapshot_signed_with_an_unpinned_key_is_refused(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    good = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    mallory = SigningKey.generate()
    forged = forgery.forge(site, paths=("shared/web/app/uploads",), base=good,
                           signing_key=mallory)
    why = f"signed by {mallory.public}, which is not in backup.signers"
    assert why in str(_rows(site, capsys)[forged]["error"])
    for argv in (("verify", "production", "--snapshot", forged),
                 ("restore", "production", "--snapshot", forged, "--yes",
                  "--allow-unsigned"),  # the flag never accepts a wrong signature
                 ("prune", "production")):
        assert site.run(*argv, capsys=capsys) == 1
        assert why in site.last_err

    # A real signature copied onto another snapshot's name does not hold there either.
    store = lab_dir / "store"
    second = forgery.forge(site, paths=("shared/web/app/uploads",), base=good, minutes=9)
    (store / layout.signature_key("backup-lab", "production", second)).write_bytes(
        (store / layout.signature_key("backup-lab", "production", good)).read_bytes())
    assert site.run("verify", "production", "--snapshot", second, capsys=capsys) == 1
    assert f"its signature was made for 'snapshots/backup-lab/production/{good}'" \
        in site.last_err


def test_two_pinned_signers_rotate_a_key(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", retention="{ keep_last: 5 }", big=10_000)
    old = site.signing_key
    by_old = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    new = SigningKey.generate()
    text = site.config.read_text()
    site.config.write_text(text.replace(f'signers: ["{old.public}"]',
                                        f'signers: ["{old.public}", "{new.public}"]'))
    site.signing_key = new
    by_new = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    rows = _rows(site, capsys)
    assert (rows[by_old]["signer"], rows[by_new]["signer"]) == (str(old.public), str(new.public))
    for sid in (by_old, by_new):
        assert site.run("verify", "production", "--snapshot", sid) == 0
    assert site.json(capsys, "restore", "production", "--snapshot", by_old, "--yes",
                     "--only", "database")["snapshot_id"] == by_old
    assert site.json(capsys, "prune", "production")["forget"] == []
    # The old key retired: what it signed is no longer trusted.
    site.config.write_text(text.replace(f'signers: ["{old.public}"]',
                                        f'signers: ["{new.public}"]'))
    assert _rows(site, capsys)[by_old]["trust"] == "untrusted"
    assert site.run("verify", "production", "--snapshot", by_old) == 1


def test_a_forged_verified_marker_counts_for_nothing(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", retention="{ keep_last: 1 }", big=10_000)
    b1 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production", "--snapshot", b1) == 0
    b2 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    b3 = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    # b2 is damaged; whoever holds the recipient marks it verified anyway, in every
    # form they can think of (a copy of b1's real marker, an old-style one).
    store = lab_dir / "store"
    real = (store / layout.verified_key("backup-lab", "production", b1)).read_bytes()
    marker = store / layout.verified_key("backup-lab", "production", b2)
    for body in (real, None):
        if body is None:
            forgery.writer(site).put(layout.verified_key("backup-lab", "production", b2),
                                     [f'{{"snapshot": "{b2}", "objects": 1}}'.encode()])
        else:
            marker.write_bytes(body)
        assert _rows(site, capsys)[b2]["verified"] is False
        plan = site.json(capsys, "prune", "production", "--dry-run")
        assert (plan["newest_verified"], plan["forget"]) == (b1, [b2])
        kept = {s["id"]: s["reasons"] for s in plan["snapshots"] if s["keep"]}
        assert kept == {b3: ["last snapshot"], b1: ["newest verified snapshot"]}
    assert _rows(site, capsys)[b1]["verified"] is True


def test_a_failed_verify_clears_the_marker(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production") == 0
    assert _rows(site, capsys)[sid]["verified"] is True
    store = FileStore(lab_dir / "store")
    manifest = forgery.reader(site).open_manifest(forgery.reader(site).resolve(sid))
    assert manifest.manifest.database is not None
    _flip_a_byte(lab_dir / "store" / manifest.manifest.database.object)
    assert site.run("verify", "production", capsys=capsys) == 1
    assert "failed verification" in site.last_err
    assert not store.exists(layout.verified_key("backup-lab", "production", sid))
    assert _rows(site, capsys)[sid]["verified"] is False


def test_snapshots_made_before_signing_need_the_flag(  # type: ignore[no-untyped-def]
        make_site, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", retention="{ keep_last: 1 }", big=10_000)
    pinned = site.config.read_text()
    site.config.write_text("\n".join(line for line in pinned.splitlines()
                                     if "signers:" not in line) + "\n")
    environ = site.environ(read=False)
    del environ["FORGE_BACKUP_SIGNING_KEY"]
    assert site.run("backup", "production", "--json", environ=environ, capsys=capsys) == 0
    old = site.last_json["snapshot_id"]
    assert "snapshots are NOT authenticated" in site.last_err  # said loudly, every time
    assert _rows(site, capsys)[old]["trust"] == "unsigned"
    assert "snapshots are NOT authenticated" in site.last_err

    site.config.write_text(pinned)  # signing set up from here on
    assert site.run("backup", "production", environ=environ, capsys=capsys) == 2
    assert "FORGE_BACKUP_SIGNING_KEY is not set, and backup.signers is" in site.last_err
    assert _rows(site, capsys)[old]["trust"] == "untrusted"
    for argv in (("verify", "production", "--snapshot", old),
                 ("restore", "production", "--snapshot", old, "--yes", "--only", "database"),
                 ("prune", "production")):
        assert site.run(*argv, capsys=capsys) == 1
        assert "not signed" in site.last_err and "--allow-unsigned" in site.last_err
        assert site.run(*argv, "--allow-unsigned", capsys=capsys) == 0, site.last_err
    new = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production") == 0  # the newest verified is now signed
    assert site.json(capsys, "prune", "production", "--allow-unsigned")["forget"] == [old]
    assert list(_rows(site, capsys)) == [new]
    assert site.json(capsys, "prune", "production")["forget"] == []  # no flag needed now
