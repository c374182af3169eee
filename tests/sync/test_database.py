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


TABLES = (
    SCHEMA
    + "CREATE TABLE wp_posts (ID INT PRIMARY KEY, post_content LONGTEXT, guid VARCHAR(255), "
      "post_modified DATETIME) CHARACTER SET utf8mb4;"
    "CREATE TABLE wp_postmeta (meta_id INT PRIMARY KEY AUTO_INCREMENT, post_id INT, "
    "meta_key VARCHAR(255), meta_value LONGTEXT, KEY post_id (post_id)) CHARACTER SET utf8mb4;"
    "CREATE TABLE wp_log (id INT PRIMARY KEY, line TEXT);"
    "INSERT INTO wp_options (option_name, option_value) VALUES "
    "('home', 'https://example.com'), ('widget', 'a:1:{s:3:\"url\";s:19:\"https://example.com\";}');"
    "INSERT INTO wp_posts SELECT seq, REPEAT('<p>https://example.com/ü</p>', 200), "
    "CONCAT('https://example.com/?p=', seq), '2025-05-05 05:05:05' FROM seq_1_to_300;"
    "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) SELECT seq % 300, 'k', "
    "REPEAT('x', seq % 97) FROM seq_1_to_2000;"
    "INSERT INTO wp_log VALUES (1, 'production log');"
)
# Made by the database's own user (a trigger's definer must be one the import can name).
TRIGGER = ("CREATE TRIGGER wp_posts_touch BEFORE UPDATE ON wp_posts FOR EACH ROW "
           "SET NEW.post_modified = '2026-01-01 00:00:00';")


def _checksums(server: MariaDB, db: Database) -> dict[str, str]:
    tables = server.sql("SHOW TABLES", database=db.name).split()
    out = server.sql("".join(f"CHECKSUM TABLE `{t}`;" for t in tables), database=db.name)
    # "database.table<TAB>checksum": the databases' names differ.
    return {k.split(".", 1)[1]: v for k, v in (line.split("\t") for line in out.splitlines())}


def _triggers(server: MariaDB, db: Database) -> str:
    return server.sql("SELECT trigger_name, event_object_table, action_statement FROM "
                      f"information_schema.triggers WHERE trigger_schema = '{db.name}'")


def test_tables_dumped_in_the_overlap_order_import_as_in_the_dumps_own(
        mariadb_server: MariaDB, db: Database) -> None:
    mariadb_server.sql(TABLES, database=db.name)
    config = _config(db)
    database.query(LocalHost(), config, TRIGGER)
    urls, tables = database.look(LocalHost(), config, "wp_")
    assert urls == {"home": "https://example.com"}
    assert {t.name for t in tables} == {"wp_options", "wp_posts", "wp_postmeta", "wp_log"}
    order = database.dump_order(tables, ["wp_log"])
    # The rewrite-heavy options last; the excluded table not at all.
    assert order[-1] == "wp_options" and sorted(order) == ["wp_options", "wp_postmeta",
                                                           "wp_posts"]
    imported = {}
    for name, tables_in_order in (("ordered", order), ("own", [])):
        into = mariadb_server.create_database(name)
        # Imported by the trigger's definer, as a sync between a site's copies would be.
        mariadb_server.sql(f"GRANT ALL ON `{into.name}`.* TO '{db.user}'@'%';")
        try:
            database.load(LocalHost(), config.model_copy(update={"name": into.name}),
                          database.dump(
                LocalHost(), config, ["wp_log"], tables_in_order))
            imported[name] = (_checksums(mariadb_server, into),
                              _triggers(mariadb_server, into))
        finally:
            mariadb_server.drop_database(into)
    (ordered, ordered_triggers), (own, own_triggers) = imported["ordered"], imported["own"]
    assert set(ordered) == {"wp_options", "wp_posts", "wp_postmeta"}
    assert ordered == own
    assert "wp_posts_touch" in ordered_triggers and ordered_triggers == own_triggers


def test_a_database_with_a_view_is_dumped_in_its_own_order(
        mariadb_server: MariaDB, db: Database) -> None:
    mariadb_server.sql(SCHEMA + "CREATE VIEW wp_a_view AS SELECT option_name FROM wp_options;",
                       database=db.name)
    _, tables = database.look(LocalHost(), _config(db), "wp_")
    assert database.Table("wp_a_view", True, 0) in tables
    assert database.dump_order(tables) == []


def test_the_order_puts_import_heavy_tables_first_and_options_like_ones_last() -> None:
    T = database.Table
    tables = [T("wp_options", False, 5_000), T("wp_posts", False, 40_000),
              T("wp_postmeta", False, 30_000), T("wp_users", False, 100),
              T("wp_2_options", False, 9_000), T("wp_sitemeta", False, 1_000),
              T("wp_log", False, 10**9)]
    assert database.dump_order(tables, ["wp_log"]) == [
        "wp_users", "wp_postmeta", "wp_posts", "wp_2_options", "wp_options", "wp_sitemeta"]
    assert database.dump_order([]) == []
    assert database.dump_order([T("we\\ird", False, 1)]) == []
    # A multisite of thousands of tables: too many names for one command line.
    assert database.dump_order([T(f"wp_{i}_posts", False, 1) for i in range(9000)]) == []
