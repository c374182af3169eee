"""`environments.<name>.database` is where the site's database lives, for backups too;
the older `backup.database` keeps working."""

from __future__ import annotations

from forge_ci.backup import session
from forge_ci.config import parse

BASE = """\
version: 1
project: demo
environments:
  production:
    path: site
{extra}    backup:
      store: file:///srv/backups
{backup}"""


def test_backups_dump_the_environments_database() -> None:
    extra = "    database: { name: shop, user: shop, password: x }\n"
    loaded = parse(BASE.format(extra=extra, backup=""), {})
    assert session.target(loaded, "production").backup_config.database is not None
    assert session.target(loaded, "production").backup_config.database.name == "shop"


def test_backup_database_keeps_working_and_database_wins() -> None:
    backup = "      database: { name: old, user: old, password: x }\n"
    old = parse(BASE.format(extra="", backup=backup), {})
    db = session.target(old, "production").backup_config.database
    assert db is not None and db.name == "old"
    both = parse(BASE.format(extra="    database: { name: new, user: new, password: x }\n",
                             backup="      database: { name: old, user: old, password: x }\n"), {})
    db = session.target(both, "production").backup_config.database
    assert db is not None and db.name == "new"
