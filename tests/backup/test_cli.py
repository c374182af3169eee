"""The commands' edges: keys, config mistakes, refusals, hostile manifests."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pydantic
import pytest

from forge_ci.backup.repo import Repository
from forge_ci.backup.snapshot import FileEntry
from forge_ci.cli import main
from forge_ci.config.backup import BackupConfig
from forge_ci.store.file import FileStore

from .conftest import Site


def test_keygen_prints_or_writes_a_key_pair(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"], {}) == 0
    printed = capsys.readouterr().out
    assert "AGE-SECRET-KEY-1" in printed and "# recipient (FORGE_BACKUP_RECIPIENT): age1" in printed

    out = tmp_path / "backup.key"
    assert main(["keygen", "--output", str(out), "--json"], {}) == 0
    shown = capsys.readouterr().out
    assert "AGE-SECRET-KEY" not in shown
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    recipient = subprocess.run(["age-keygen", "-y", str(out)], capture_output=True, text=True,
                               check=True).stdout.strip()
    assert recipient in shown
    assert main(["keygen", "--output", str(out)], {}) == 2  # never overwrites a key


def test_store_and_paths_config() -> None:
    ok = BackupConfig(store="file:backups", paths=("shared/web/app/uploads/", "shared/x"))
    assert ok.paths == ("shared/web/app/uploads", "shared/x")
    assert ok.store_url(Path("/srv/site")) == "file:///srv/site/backups"
    assert BackupConfig(store="s3://bucket/some/prefix/").store == "s3://bucket/some/prefix"
    for bad in ({"store": "file://backups"}, {"store": "ftp://x"}, {"store": "s3://"},
                {"store": "file:../out"},
                {"store": "file:///b", "paths": ("shared", "shared/web")},
                {"store": "file:///b", "paths": ("../etc",)},
                {"store": "file:///b", "paths": ()},
                {"store": "file:///b", "object_lock": {"days": 30}},
                {"store": "file:///b", "retention": {}}):
        with pytest.raises(pydantic.ValidationError):
            BackupConfig(**bad)  # type: ignore[arg-type]


def test_keys_and_config_are_checked_first(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                           capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", retention="{ keep_last: 1 }", big=10_000)
    environ = dict(site.base_environ)
    assert site.run("backup", "production", environ=environ, capsys=capsys) == 2
    assert "FORGE_BACKUP_RECIPIENT is not set" in site.last_err
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    assert site.run("verify", "production", read=False, capsys=capsys) == 2
    assert "FORGE_BACKUP_IDENTITY is not set" in site.last_err
    # Listing works with the public key only (ids and times from the keys).
    rows = site.json(capsys, "snapshots", "production", read=False)["snapshots"]
    assert [r["id"] for r in rows] == [sid] and "files" not in rows[0]
    rows = site.json(capsys, "snapshots", "production")["snapshots"]
    assert rows[0]["files"] == 34 and rows[0]["database"] == site.db.name
    # A drill target must be new or empty.
    busy = lab_dir / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert site.run("restore", "production", "--only", "files", "--to-dir", str(busy),
                    capsys=capsys) == 2
    assert "not an empty directory" in site.last_err
    assert site.run("restore", "production", "--snapshot", "nope", capsys=capsys) == 1
    assert "no snapshot 'nope'" in site.last_err
    text = site.config.read_text().replace("      retention: { keep_last: 1 }\n", "")
    site.config.write_text(text)
    assert site.run("prune", "production", capsys=capsys) == 2
    assert "no backup.retention" in site.last_err


def test_a_hostile_manifest_is_refused_before_writing(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file", big=10_000)
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    # Even a snapshot its pinned signer wrote is checked for hostile paths on read.
    repo = Repository(FileStore(lab_dir / "store"), "backup-lab", "production",
                      identities=[site.identity], signing_key=site.signing_key,
                      signers=[site.signing_key.public])
    good = repo.load(repo.resolve(sid))
    victim = lab_dir / "victim.txt"
    # Anyone holding the public key can write a manifest: it must be checked on read.
    real = next(f for f in good.files if f.type == "file" and f.size)
    evil = FileEntry(f"{good.paths[0]}/../../../../../victim.txt", "file", 0o644, 1,
                     real.size, real.sha256, real.objects)
    link = FileEntry(f"{good.paths[0]}/escape", "symlink", 0o777, 1, target="../" * 6 + "tmp")
    for entry in (evil, link):
        forged = dataclasses.replace(good, files=(*good.files, entry))
        repo.save(forged)
        assert site.run("restore", "production", "--yes", capsys=capsys) == 1
        assert "manifest" in site.last_err and ("hostile" in site.last_err
                                                or "outside" in site.last_err)
        assert not victim.exists()
    assert not os.path.lexists(site.uploads / "escape")


def test_backup_host_must_be_one_of_the_hosts(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "forge.yml"
    config.write_text(
        "version: 1\nproject: p\nenvironments:\n  production:\n"
        "    hosts: [{ host: 192.0.2.1 }, { host: 192.0.2.2 }]\n    path: /srv/site\n"
        f"    backup: {{ store: 'file://{tmp_path}/store', host: 192.0.2.9 }}\n")
    from forge_ci.backup.format.keys import generate_identity

    environ = {"FORGE_BACKUP_RECIPIENT": str(generate_identity().recipient)}
    assert main(["backup", "--config", str(config), "production"], environ) == 2
    err = capsys.readouterr().err
    assert "backup.host '192.0.2.9' is not one of the environment's hosts" in err
    assert "192.0.2.1, 192.0.2.2" in err
