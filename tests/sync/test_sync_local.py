"""Sync between local environments (no hosts: this machine), on the lab's MariaDB."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab.mariadb import Database, MariaDB

from forge_ci.cli import main
from tests.notify.conftest import Receiver, receiver  # noqa: F401 (fixture)

FROM, TO = "https://example.com", "http://localhost:8080"
WIDGET = 'a:1:{i:2;a:1:{s:4:"text";s:%d:"%s";}}'


def widget(text: str) -> str:
    return WIDGET % (len(text.encode()), text)


@dataclass
class Local:
    root: Path
    server: MariaDB
    prod: Database
    dev: Database
    env: dict[str, str]

    def forge(self, *args: str) -> int:
        return main([*args, "--config", str(self.root / "forge.yml")], env=self.env)

    def value(self, db: Database, name: str) -> str:
        return self.server.sql(f"SELECT option_value FROM wp_options WHERE option_name='{name}'",
                               database=db.name).rstrip("\n")


SCHEMA = ("CREATE TABLE wp_options (option_id INT PRIMARY KEY AUTO_INCREMENT, "
          "option_name VARCHAR(191) UNIQUE, option_value LONGTEXT) CHARACTER SET utf8mb4;")


@pytest.fixture
def local(tmp_path: Path, mariadb_server: MariaDB) -> Iterator[Local]:
    prod, dev = mariadb_server.create_database("prod"), mariadb_server.create_database("dev")
    text = f'<a href="{FROM}/über">ü</a>'
    mariadb_server.sql(SCHEMA + "INSERT INTO wp_options (option_name, option_value) VALUES "
                       f"('home', '{FROM}'), ('siteurl', '{FROM}/wp'), "
                       f"('widget_text', '{widget(text)}'), ('blog_public', '1'), "
                       "('_transient_x', 'y');"
                       "CREATE TABLE wp_log (id INT PRIMARY KEY, line TEXT);"
                       "INSERT INTO wp_log VALUES (1, 'production log');", database=prod.name)
    mariadb_server.sql(SCHEMA + "INSERT INTO wp_options (option_name, option_value) VALUES "
                       f"('home', '{TO}'), ('dev_only', 'kept');"
                       "CREATE TABLE wp_log (id INT PRIMARY KEY, line TEXT, extra INT);"
                       "INSERT INTO wp_log VALUES (7, 'local log', 1);", database=dev.name)
    for env in ("prod", "dev"):
        (tmp_path / env / "shared/web/app/uploads").mkdir(parents=True)
    (tmp_path / "prod/shared/web/app/uploads/a.txt").write_text("from prod")

    def db(d: Database, var: str) -> str:
        return (f"{{name: {d.name}, user: {d.user}, password: \"${{{var}}}\", host: {d.host}, "
                f"port: {d.port}}}")

    (tmp_path / "forge.yml").write_text(f"""\
version: 1
project: t
environments:
  production:
    path: prod
    database: {db(prod, "PROD_PW")}
  local:
    path: dev
    database: {db(dev, "DEV_PW")}
    sync: {{ exclude_tables: [wp_log] }}
  other:                               # its secret is not set: sync never needs it
    path: other
    dotenv: {{ DB_PASSWORD: "${{OTHER_DB_PASSWORD}}" }}
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PROD_PW": prod.password,
           "DEV_PW": dev.password}
    yield Local(tmp_path, mariadb_server, prod, dev, env)
    mariadb_server.drop_database(prod)
    mariadb_server.drop_database(dev)


def test_production_into_local_takes_its_urls_from_both_databases(
        local: Local, capsys: pytest.CaptureFixture[str]) -> None:
    assert local.forge("sync", "production", "local", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["replace"] == [[FROM, TO]]
    # Phase durations and sizes, as deploys and backups record theirs.
    assert {"database_s", "uploads_s", "uploads_bytes", "hooks_s"} <= set(report["metrics"])
    assert local.value(local.dev, "home") == TO
    assert local.value(local.dev, "siteurl") == f"{TO}/wp"
    assert local.value(local.dev, "widget_text") == widget(f'<a href="{TO}/über">ü</a>')
    assert local.value(local.dev, "blog_public") == "0"
    assert local.value(local.dev, "_transient_x") == ""
    assert (local.root / "dev/shared/web/app/uploads/a.txt").read_text() == "from prod"
    assert local.value(local.prod, "home") == FROM
    # An excluded table is left exactly as it was, schema included.
    assert local.server.sql("SELECT * FROM wp_log", database=local.dev.name) == "7\tlocal log\t1\n"

    assert local.forge("sync-undo", "local", report["undo_id"]) == 0
    assert local.value(local.dev, "dev_only") == "kept"
    assert local.value(local.dev, "siteurl") == ""  # the table is as it was, row for row


def test_local_into_production_needs_confirm(local: Local) -> None:
    assert local.forge("sync", "local", "production", "--database") == 1
    assert local.value(local.prod, "home") == FROM
    assert local.forge("sync", "local", "production", "--database",
                       "--confirm", "production") == 0
    # The local URL (from local's database) became production's (from production's).
    assert local.value(local.prod, "dev_only") == "kept"
    assert local.value(local.prod, "home") == FROM


def test_a_sync_and_a_failed_one_are_announced_about_the_target(
        local: Local, receiver: Callable[..., Receiver]) -> None:  # noqa: F811
    rec = receiver()
    config = local.root / "forge.yml"
    config.write_text(config.read_text() + "notify:\n  - {type: webhook, url: '"
                      + rec.url("/hook") + "', secret: '${HOOK_SECRET}'}\n")
    local.env["HOOK_SECRET"] = "hook-secret-for-the-sync-test"
    assert local.forge("sync", "production", "local", "--database") == 0
    assert local.forge("sync", "local", "production") == 1  # protected: refused
    events = [json.loads(r.body) for r in rec.requests]
    assert [(e["event"], e["environment"]) for e in events] == [
        ("sync.succeeded", "local"), ("sync.failed", "production")]
    assert "synced production -> local" in events[0]["summary"]
    assert "protected" in events[1]["summary"]
