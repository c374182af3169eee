"""The dump rewriter: framing, escapes, kept columns, excluded tables, the report; then
a real mariadb-dump rewritten and imported, every value checked by PHP."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lab.mariadb import MariaDB

from forge_ci.sync import SyncError
from forge_ci.sync.replace import Rules
from forge_ci.sync.sqldump import DUMP_FLAGS, Options, Report, count_dump, rewrite_dump

from .php_oracle import Php

RULES = Rules.from_pairs([("https://example.com", "https://staging.example.com")])
OLD = "https://example.com"
NEW = "https://staging.example.com"


def sql(value: bytes) -> bytes:
    """A literal as mariadb-dump writes it."""
    escaped = (
        value.replace(b"\\", b"\\\\")
        .replace(b"\x00", b"\\0")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\x1a", b"\\Z")
        .replace(b"'", b"\\'")
        .replace(b'"', b'\\"')
    )
    return b"'" + escaped + b"'"


def ser(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b's:%d:"%b";' % (len(raw), raw)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def run(
    dump: bytes, options: Options | None = None, size: int = 65536, rules: Rules = RULES
) -> tuple[bytes, Report]:
    report = Report()
    out = b"".join(rewrite_dump(chunked(dump, size), rules, options or Options(), report))
    return out, report


HEADER = b"""/*M!999999\\- enable the sandbox mode */
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
DROP TABLE IF EXISTS `wp_posts`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `wp_posts` (
  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `post_content` longtext NOT NULL COMMENT 'has (parens), quotes '' and https://example.com',
  `guid` varchar(255) NOT NULL DEFAULT '',
  PRIMARY KEY (`ID`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
/*!40101 SET character_set_client = @saved_cs_client */;
LOCK TABLES `wp_posts` WRITE;
/*!40000 ALTER TABLE `wp_posts` DISABLE KEYS */;
"""
FOOTER = b"""/*!40000 ALTER TABLE `wp_posts` ENABLE KEYS */;
UNLOCK TABLES;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
"""


def insert(table: bytes, columns: list[bytes], rows: list[list[bytes]]) -> bytes:
    names = b",".join(b"`" + c + b"`" for c in columns)
    values = b",".join(b"(" + b",".join(row) + b")" for row in rows)
    return b"INSERT INTO `%b` (%b) VALUES %b;\n" % (table, names, values)


POSTS = [b"ID", b"post_content", b"guid"]


def test_a_dump_without_from_passes_byte_for_byte_whatever_the_chunking() -> None:
    dump = (
        HEADER
        + insert(b"wp_posts", POSTS, [[b"1", sql(b"https://other.org (x),(y);"), b"'g'"]])
        + FOOTER
    )
    for size in (1, 7, 4096):
        assert run(dump, size=size) == (dump, Report())


def test_values_are_rewritten_and_guid_is_not() -> None:
    dump = (
        HEADER
        + insert(
            b"wp_posts",
            POSTS,
            [
                [
                    b"1",
                    sql(b"<a href='https://example.com/a'>(x),(y);</a>"),
                    sql(b"https://example.com/?p=1"),
                ],
                [b"2", sql(b"nothing here"), sql(b"https://example.com/?p=2")],
                [b"3", sql(b"see http://example.com"), b"''"],
            ],
        )
        + FOOTER
    )
    out, report = run(dump, size=3)
    assert (
        out
        == HEADER
        + insert(
            b"wp_posts",
            POSTS,
            [
                [
                    b"1",
                    sql(b"<a href='https://staging.example.com/a'>(x),(y);</a>"),
                    sql(b"https://example.com/?p=1"),
                ],
                [b"2", sql(b"nothing here"), sql(b"https://example.com/?p=2")],
                [b"3", sql(b"see https://staging.example.com"), b"''"],
            ],
        )
        + FOOTER
    )
    assert report.changed == {("wp_posts", "post_content"): 2}
    # The CREATE TABLE comment is schema, not data: it passes unchanged.
    assert b"quotes '' and https://example.com'" in out


def test_every_value_with_a_needle_is_rewritten_once_around_kept_columns_and_plain_rows(
) -> None:
    # One statement, one row a line: rows without FROM stay byte for byte; a row's
    # values each hold FROM several times, a kept column sits between two rewritten
    # ones, and a number and NULL stand next to them.
    columns = [b"ID", b"a", b"guid", b"b", b"n"]
    many = b"https://example.com/1 and //example.com/2, https:\\/\\/example.com\\/3"
    rows = [
        [b"1", sql(b"plain"), sql(b"g1"), sql(b"nothing"), b"NULL"],
        [b"2", sql(many), sql(b"https://example.com/?p=2"), sql(b"x " + OLD.encode()), b"7"],
        [b"3", sql(b"(https://example.org),"), sql(b"g3"), b"NULL", b"8"],
    ]
    dump = b"".join(b"(" + b",".join(row) + b")" for row in rows)
    statement = b"INSERT INTO `t` (%b) VALUES %b;\n" % (
        b",".join(b"`" + c + b"`" for c in columns), dump.replace(b"),(", b"),\n("))
    out, report = run(statement, size=5)
    new_many = (b"https://staging.example.com/1 and //staging.example.com/2, "
                b"https:\\/\\/staging.example.com\\/3")
    assert out == statement.replace(sql(many), sql(new_many)).replace(
        sql(b"x " + OLD.encode()), sql(b"x " + NEW.encode()))
    assert report.changed == {("t", "a"): 1, ("t", "b"): 1}


def test_every_escape_round_trips_and_serialized_lengths_count_unescaped_bytes() -> None:
    tricky = b"q' d\" b\\ n\n r\r z\x00 Z\x1a t\t bs\x08 pct\\% " + OLD.encode() + " é".encode()
    value = b"a:2:{i:0;" + ser(tricky) + b"i:1;" + ser("x'y") + b"}"
    dump = insert(b"wp_options", [b"option_name", b"option_value"], [[b"'w'", sql(value)]])
    out, report = run(dump)
    expected = (
        b"a:2:{i:0;" + ser(tricky.replace(OLD.encode(), NEW.encode())) + b"i:1;" + ser("x'y") + b"}"
    )
    assert out == insert(
        b"wp_options", [b"option_name", b"option_value"], [[b"'w'", sql(expected)]]
    )
    assert report.changed == {("wp_options", "option_value"): 1}


def test_literals_written_with_doubled_quotes_and_all_escapes_are_read() -> None:
    # mariadb-dump escapes with backslashes; a hand-written dump may double quotes or use \b \t.
    literal = b"'it''s \\t\\b " + OLD.encode() + b"'"
    out, _ = run(insert(b"t", [b"c"], [[literal]]))
    assert out == insert(b"t", [b"c"], [[sql(b"it's \t\x08 " + NEW.encode())]])


# Pieces of values: every byte SQL escapes, quotes next to backslashes, separators.
PIECES = [b"'", b"\\", b"\\'", b"''", b'"', b"\n", b"\r", b"\x00", b"\x1a", b",", b"(", b")",
          b"x", b"7", " é".encode(), b" " + OLD.encode() + b"/ "]
values = st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join)


def doubled(value: bytes) -> bytes:
    """A literal as a hand-written dump may write it: quotes doubled, not escaped."""
    return b"'" + sql(value)[1:-1].replace(b"\\'", b"''") + b"'"


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(values, st.booleans(), st.integers(0, 3), values), min_size=1,
                  max_size=4),
    one_line=st.booleans(),
)
def test_rows_long_and_short_are_read_whatever_their_literals_hold(
    rows: list[tuple[bytes, bool, int, bytes]], one_line: bool
) -> None:
    # Long values (beyond a kilobyte) are cut by another reader than short ones: both
    # must find the same values. A value with FROM is rewritten (and written as
    # mariadb-dump writes it); any other value and guid pass as they were.
    before: list[list[bytes]] = []
    after: list[list[bytes]] = []
    for i, (content, hand_written, length, guid) in enumerate(rows):
        content = content * (1 + 300 * length)
        literal = doubled(content) if hand_written else sql(content)
        rewritten = sql(content.replace(OLD.encode(), NEW.encode()))
        before.append([b"%d" % i, literal, sql(guid), b"NULL"])
        after.append([b"%d" % i, rewritten if OLD.encode() in content else literal, sql(guid),
                      b"NULL"])
    columns = [b"ID", b"post_content", b"guid", b"post_parent"]
    separator = b"," if one_line else b",\n"

    def statement(table: list[list[bytes]]) -> bytes:
        head = insert(b"wp_posts", columns, table[:1])[:-2]
        return head + b"".join(separator + b"(" + b",".join(r) + b")" for r in table[1:]) + b";\n"

    out, _ = run(statement(before))
    assert out == statement(after)


def test_literal_pairs_with_characters_sql_escapes_match_in_text_and_serialized() -> None:
    rules = Rules.from_pairs([(OLD, NEW), ('O\'Reilly "Media"\\', "Staging\n'Co'")])
    old, new = b'O\'Reilly "Media"\\', b"Staging\n'Co'"
    text = b"by " + old + b" at " + OLD.encode()
    value = b"a:1:{i:0;" + ser(text) + b"}"
    dump = insert(b"t", [b"a", b"b"], [[sql(text), sql(value)]])
    out, report = run(dump, rules=rules)
    new_text = b"by " + new + b" at " + NEW.encode()
    assert out == insert(
        b"t", [b"a", b"b"], [[sql(new_text), sql(b"a:1:{i:0;" + ser(new_text) + b"}")]]
    )
    assert report.changed == {("t", "a"): 1, ("t", "b"): 1}


def test_kept_columns_by_name_and_by_table_and_binary_values() -> None:
    url = sql(OLD.encode())
    dump = insert(
        b"wp_a", [b"guid", b"keep", b"note", b"bin"], [[url, url, url, b"_binary " + url]]
    )
    dump += insert(b"wp_b", [b"guid", b"keep", b"note", b"bin"], [[url, url, url, b"0x41"]])
    out, report = run(dump, Options(keep=frozenset({"guid", "wp_a.keep"})))
    new = sql(NEW.encode())
    assert out == insert(
        b"wp_a", [b"guid", b"keep", b"note", b"bin"], [[url, url, new, b"_binary " + url]]
    ) + insert(b"wp_b", [b"guid", b"keep", b"note", b"bin"], [[url, new, new, b"0x41"]])
    assert report.changed == {("wp_a", "note"): 1, ("wp_b", "keep"): 1, ("wp_b", "note"): 1}


def test_broken_serialized_values_are_left_untouched_and_counted() -> None:
    broken = sql(b'a:1:{i:0;s:3:"' + OLD.encode() + b'";}')
    out, report = run(insert(b"wp_options", [b"option_value"], [[broken], [sql(OLD.encode())]]))
    assert out == insert(b"wp_options", [b"option_value"], [[broken], [sql(NEW.encode())]])
    assert report.unparsable == {("wp_options", "option_value"): 1}
    assert report.changed == {("wp_options", "option_value"): 1}
    assert report.lines() == [
        "wp_options.option_value: 1 changed, 1 left untouched (serialized, unparsable)"
    ]


def test_excluded_tables_leave_no_statement_in_the_stream() -> None:
    logs = (
        HEADER.replace(b"wp_posts", b"wp_logs")
        + insert(b"wp_logs", POSTS, [[b"1", sql(OLD.encode()), b"''"]])
        + FOOTER.replace(b"wp_posts", b"wp_logs")
    )
    posts = HEADER + insert(b"wp_posts", POSTS, [[b"1", sql(b"x"), b"''"]]) + FOOTER
    out, report = run(logs + posts, Options(exclude_tables=frozenset({"wp_logs"})), size=5)
    assert b"wp_logs" not in out
    assert out.endswith(posts)
    assert report.excluded_statements == {"wp_logs": 6}  # DROP, CREATE, LOCK, 2 ALTER, INSERT
    assert report.changed == {}


def test_dry_run_yields_the_original_and_counts_what_a_run_would_change() -> None:
    dump = insert(b"wp_posts", POSTS, [[b"1", sql(OLD.encode()), sql(OLD.encode())]])
    out, report = run(dump, Options(dry_run=True))
    assert out == dump
    assert report.changed == {("wp_posts", "post_content"): 1}
    assert count_dump([dump], RULES, Options()).changed == report.changed


def test_rows_on_lines_of_their_own_are_one_statement_and_a_cut_dump_is_refused() -> None:
    rows = [[b"%d" % i, sql(b"%d %b" % (i, OLD.encode())), b"''"] for i in range(5)]
    dump = insert(b"wp_posts", POSTS, rows).replace(b"),(", b"),\n(")
    assert dump.count(b"\n") == 5  # as MariaDB 10.11 writes it
    out, report = run(dump, size=11)
    assert out == dump.replace(OLD.encode(), NEW.encode())
    assert report.changed == {("wp_posts", "post_content"): 5}
    with pytest.raises(SyncError, match="ends inside an INSERT"):
        run(dump[: dump.index(b"\n") + 1])


def test_an_insert_without_column_names_is_refused() -> None:
    dump = b"INSERT INTO `wp_posts` VALUES (1,'https://example.com','');\n"
    with pytest.raises(SyncError, match="complete-insert"):
        run(dump)


# -- a real mariadb-dump ------------------------------------------------------------------

SCHEMA = """
CREATE TABLE wp_options (option_id INT PRIMARY KEY, option_name VARCHAR(191),
    option_value LONGTEXT) CHARACTER SET utf8mb4;
CREATE TABLE wp_posts (ID INT PRIMARY KEY, post_content LONGTEXT, guid VARCHAR(255),
    thumb BLOB) CHARACTER SET utf8mb4;
CREATE TABLE wp_logs (id INT PRIMARY KEY, line TEXT) CHARACTER SET utf8mb4;
"""


def serialized_values() -> list[bytes]:
    widget = (
        b'a:2:{i:2;a:3:{s:5:"title";'
        + ser("Café ☕ 'quoted' \"double\" back\\slash")
        + b's:4:"text";'
        + ser('<a href="https://example.com/menü">x</a>\n\r\0 end')
        + b's:4:"json";'
        + ser('{"url":"https:\\/\\/example.com\\/wp-json","enc":"https%3A%2F%2Fexample.com"}')
        + b'}s:12:"_multiwidget";i:1;}'
    )
    inner = b'a:1:{s:4:"home";' + ser("http://example.com") + b"}"
    nested = (
        b'a:2:{s:5:"inner";'
        + ser(inner)
        + b's:3:"obj";'
        + (
            b'O:12:"Vendor_Thing":2:{'
            + ser(b"\x00*\x00url")
            + ser("//example.com/x")
            + ser(b"\x00Vendor_Thing\x00alt")
            + ser("https://example.com.au")
            + b"}"
        )
        + b"}"
    )
    return [widget, nested, ser("https://example.com"), b"i:5;"]


def hex_literal(value: bytes) -> str:
    return "0x" + value.hex() if value else "''"


def test_a_real_dump_rewritten_and_imported_is_read_by_php(
    mariadb_server: MariaDB, php: Php
) -> None:
    source = mariadb_server.create_database("src")
    target = mariadb_server.create_database("dst")
    serialized = serialized_values()
    broken = b'a:1:{i:0;s:3:"https://example.com";}'
    rows = [*serialized, broken]
    options_sql = ",".join(
        f"({i}, 'o{i}', {hex_literal(value)})" for i, value in enumerate(rows, start=1)
    )
    mariadb_server.sql(
        SCHEMA
        + f"INSERT INTO wp_options VALUES {options_sql};\n"
        + "INSERT INTO wp_posts VALUES (1, 'Read https://example.com/about, not "
        + "https://myexample.com.', 'https://example.com/?p=1', 0x00FF27),"
        + ' (2, \'<!-- wp:image {"url":"https:\\\\/\\\\/example.com\\\\/a.jpg"} -->\','
        + " 'https://example.com/?p=2', NULL);\n"
        + "INSERT INTO wp_logs VALUES (1, 'production log https://example.com');\n",
        database=source.name,
    )
    mariadb_server.sql(
        "CREATE TABLE wp_logs (id INT PRIMARY KEY, line TEXT);\n"
        "INSERT INTO wp_logs VALUES (7, 'staging log');\n",
        database=target.name,
    )

    socket = f"--socket={mariadb_server.socket}"
    dump = subprocess.Popen(
        ["mariadb-dump", "--no-defaults", "-uroot", socket, *DUMP_FLAGS, source.name],
        stdout=subprocess.PIPE,
    )
    load = subprocess.Popen(
        ["mariadb", "--no-defaults", "-uroot", socket, target.name], stdin=subprocess.PIPE
    )
    assert dump.stdout is not None and load.stdin is not None
    report = Report()
    options = Options(exclude_tables=frozenset({"wp_logs"}))
    for piece in rewrite_dump(iter(lambda: dump.stdout.read(4096), b""), RULES, options, report):
        load.stdin.write(piece)
    load.stdin.close()
    assert dump.wait(timeout=60) == 0
    assert load.wait(timeout=60) == 0

    def column(table: str, name: str, database: str) -> list[bytes]:
        out = mariadb_server.sql(f"SELECT HEX({name}) FROM {table} ORDER BY 1", database)
        return [bytes.fromhex(line) for line in out.splitlines()]

    def by_id(table: str, name: str, key: str, database: str) -> list[bytes]:
        out = mariadb_server.sql(
            f"SELECT HEX(COALESCE({name}, '')) FROM {table} ORDER BY {key}", database
        )
        return [bytes.fromhex(line) for line in out.splitlines()]

    after = by_id("wp_options", "option_value", "option_id", target.name)
    for before, now in zip(serialized, after, strict=False):
        verdict = php.check(before, now)
        assert verdict["readable"], now
        assert verdict["equal"], (now, verdict["expected"])
    assert after[2] == ser(NEW)
    assert after[-1] == broken  # untouched, and counted
    assert report.unparsable == {("wp_options", "option_value"): 1}
    assert report.changed == {
        ("wp_options", "option_value"): 3,
        ("wp_posts", "post_content"): 2,
    }

    content = by_id("wp_posts", "post_content", "ID", target.name)
    assert content == [
        b"Read https://staging.example.com/about, not https://myexample.com.",
        b'<!-- wp:image {"url":"https:\\/\\/staging.example.com\\/a.jpg"} -->',
    ]
    assert by_id("wp_posts", "guid", "ID", target.name) == [
        b"https://example.com/?p=1",
        b"https://example.com/?p=2",
    ]
    assert by_id("wp_posts", "thumb", "ID", target.name) == [b"\x00\xff'", b""]
    assert column("wp_logs", "line", target.name) == [b"staging log"]
    assert not re.search(rb"staging", b"".join(column("wp_logs", "line", source.name)))
