"""The database end of a sync against the lab's MariaDB: the URL look-up and the
clean-up after an import, each one client run whether the options table is there or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.mariadb import Database, MariaDB

from forge_ci.config.backup import DatabaseConfig
from forge_ci.remote import LocalHost
from forge_ci.sync import database

SCHEMA = ("CREATE TABLE wp_options (option_id INT PRIMARY KEY AUTO_INCREMENT, "
          "option_name VARCHAR(191) UNIQUE, option_value LONGTEXT) CHARACTER SET utf8mb4;")


@pytest.fixture
def db(mariadb_server: MariaDB) -> Iterator[Database]:
    made = mariadb_server.create_database("syncdb")
    yield made
    mariadb_server.drop_database(made)


def _config(db: Database) -> DatabaseConfig:
    return DatabaseConfig.model_validate({"name": db.name, "user": db.user,
                                          "password": db.password, "host": db.host,
                                          "port": db.port})


def _options(server: MariaDB, db: Database) -> dict[str, str]:
    out = server.sql("SELECT option_name, option_value FROM wp_options", database=db.name)
    return dict(line.split("\t", 1) for line in out.splitlines())


def test_without_an_options_table_nothing_is_read_or_changed(
        mariadb_server: MariaDB, db: Database) -> None:
    config = _config(db)
    assert database.home_urls(LocalHost(), config, "wp_") == {}
    database.after_import(LocalHost(), config, "wp_", public=False)
    assert mariadb_server.sql("SHOW TABLES", database=db.name) == ""


def test_home_urls_and_the_clean_up_read_and_change_only_their_rows(
        mariadb_server: MariaDB, db: Database) -> None:
    # "_transients" would match an unescaped "_transient_%" ('_' is LIKE's any
    # character): the escapes must survive being quoted into the guarded statement.
    mariadb_server.sql(SCHEMA + "INSERT INTO wp_options (option_name, option_value) VALUES "
                       "('home', 'https://example.com'), ('siteurl', 'https://example.com/wp'), "
                       "('blog_public', '1'), ('_transient_a', 'x'), "
                       "('_site_transient_b', 'y'), ('_transients', 'kept');",
                       database=db.name)
    config = _config(db)
    assert database.home_urls(LocalHost(), config, "wp_") == {
        "home": "https://example.com", "siteurl": "https://example.com/wp"}

    database.after_import(LocalHost(), config, "wp_", public=True)
    after = _options(mariadb_server, db)
    assert "_transient_a" not in after and "_site_transient_b" not in after
    assert after["_transients"] == "kept" and after["blog_public"] == "1"

    database.after_import(LocalHost(), config, "wp_", public=False)
    after = _options(mariadb_server, db)
    assert after["blog_public"] == "0" and after["_transients"] == "kept"
