"""`forge-ci drill`: restore the newest snapshot into a scratch database and directory,
check the copy, tell people when it fails, and leave nothing behind. Real MariaDB, a
file:// store, the backup code's own snapshots, a webhook receiver on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from forge_ci.backup import layout
from forge_ci.backup.repo import Repository
from forge_ci.backup.snapshot import DatabaseEntry
from forge_ci.store import open_store
from tests.notify.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    Secrets,
    notify_secrets,
    receiver,
)

from .conftest import Site, as_user

WP_OPTIONS = ("CREATE TABLE wp_options (option_id INT PRIMARY KEY, option_name VARCHAR(191), "
              "option_value LONGTEXT); INSERT INTO wp_options VALUES (1, 'siteurl', "
              "'https://shop.example'), (2, 'blogname', 'Shop');")


def drill_site(make_site: Callable[..., Site], rec: Receiver, secrets: Secrets) -> Site:
    site = make_site(big=1000)
    as_user(site.db, WP_OPTIONS, site.server)
    scratch = site.db.name + "_drill"
    site.server.sql(f"GRANT ALL ON `{scratch}`.* TO '{site.db.user}'@'%';")
    site.config.write_text(site.config.read_text() + (
        f"    notify: [{{type: webhook, url: '{rec.url('/d')}', secret: '${{HOOK_SECRET}}', "
        "events: [drill]}]\n"))
    site.base_environ |= {"HOOK_SECRET": secrets.hook_secret, "FORGE_NOTIFY_ATTEMPTS": "1"}
    return site


def databases(site: Site) -> list[str]:
    return site.server.sql("SHOW DATABASES;").split()


def test_a_drill_restores_checks_and_cleans_up(
        make_site: Callable[..., Site], receiver: Callable[..., Receiver],  # noqa: F811
        notify_secrets: Secrets, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    rec = receiver()
    site = drill_site(make_site, rec, notify_secrets)
    assert site.run("backup", "production", read=False) == 0
    # The snapshot carries its phase durations and sizes, and so does the summary.
    (row,) = site.json(capsys, "snapshots", "production")["snapshots"]
    assert {"dump_s", "files_s", "seconds", "bytes", "database_bytes"} <= set(row["stats"])
    assert row["stats"]["database_bytes"] > 0
    assert "| dump phase |" in site.summary.read_text()
    report = site.json(capsys, "drill", "production")
    assert report["ok"] is True and report["problems"] == []
    assert report["tables"] >= 3 and report["rows"] >= 7  # posts, meta, wp_options
    assert report["files"] > 20
    assert site.db.name + "_drill" not in databases(site)
    assert not (site.root / ".forge" / "drill" / f"forge-drill-{report['snapshot']}").exists()
    (event,) = [json.loads(r.body) for r in rec.requests]
    assert event["event"] == "drill.succeeded" and event["details"]["tables"] >= 3


def test_a_snapshot_whose_dump_does_not_import_fails_the_drill(
        make_site: Callable[..., Site], receiver: Callable[..., Receiver],  # noqa: F811
        notify_secrets: Secrets, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    rec = receiver()
    site = drill_site(make_site, rec, notify_secrets)
    assert site.run("backup", "production", read=False) == 0
    # A newer snapshot whose dump is sealed, signed and authenticated like any other
    # (age, zstd, its digest in the manifest, the trailer) but is not valid SQL.
    repo = Repository(open_store(f"file://{site.root.parent / 'store'}"), "backup-lab",
                      "production", identities=[site.identity],
                      signing_key=site.signing_key, signers=[site.signing_key.public])
    good = repo.load(repo.refs()[-1])
    sql = b"CREATE TABLE wp_posts (id INT PRIMARY KEY,;\nINSERT INTO nowhere;\n-- Dump completed\n"
    key = layout.random_data_key()
    repo.put(key, [sql])
    assert good.database is not None
    # Ids sort by the second: a second later, so it is the newest whatever its random tail.
    later = good.time + timedelta(seconds=1)
    broken = dataclasses.replace(
        good, id=layout.new_snapshot_id(later), time=later,
        database=DatabaseEntry(good.database.name, key, len(sql),
                               hashlib.sha256(sql).hexdigest(), good.database.tool,
                               good.database.trailer))
    repo.save(broken)

    assert site.run("drill", "production", "--json", capsys=capsys) == 1
    report = site.last_json
    assert report["snapshot"] == broken.id and report["ok"] is False
    assert any("restore failed: importing into database" in p for p in report["problems"])
    assert "failed" in site.last_err and broken.id in site.last_err
    assert site.db.name + "_drill" not in databases(site)  # scratch dropped all the same
    (event,) = [json.loads(r.body) for r in rec.requests]
    assert event["event"] == "drill.failed" and event["severity"] == "error"
    assert broken.id in event["summary"]
