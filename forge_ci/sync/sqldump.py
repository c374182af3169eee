"""Stream a ``mariadb-dump`` through the value rewriter, statement by statement.

**The dump.** Sync makes its dump with :data:`DUMP_FLAGS`::

    mariadb-dump --single-transaction --quick --skip-comments --skip-dump-date
                 --complete-insert --extended-insert --hex-blob
                 --default-character-set=utf8mb4 --net-buffer-length=1048576 DB

and the rewriter relies on what those flags promise: every ``INSERT`` names its
columns (``--complete-insert``; an INSERT without a column list is refused with
:class:`~forge_ci.sync.SyncError`, since ``guid`` could not be told apart), holds
about a megabyte of rows (``--net-buffer-length``), and binary columns arrive as
``0x…`` hex (``--hex-blob``) so every quoted literal is text in the connection's
``utf8mb4``. A quoted value keeps MariaDB's escapes (``\\0 \\' \\" \\b \\n \\r \\t \\Z \\\\``
and ``''``), so no line of the dump holds a raw newline inside a value.

**Streaming.** :func:`rewrite_dump` takes any iterable of byte chunks and yields bytes.
It holds one statement at a time (the largest ``INSERT``, about a megabyte, tens of MB
at worst), never the dump. MariaDB 10.11 writes each row of an extended ``INSERT`` on a
line of its own, so an ``INSERT`` is its lines up to the one that ends in ``;``; any
other statement passes through line by line. Everything but an ``INSERT`` passes through
byte for byte, and so does every ``INSERT`` that holds none of the rules' needles; inside
the others, only the rows that hold a needle are cut into values. As no value holds a raw
newline, each line of an ``INSERT`` holds whole rows (one, from MariaDB 10.11; all of
them, from older dumpers): rows on lines before a needle's are copied without being read,
and a row is cut in one regex match, or, when longer than a kilobyte (a post), by
``bytes.find`` from quote to quote, which skips a long literal at memory speed. A text
value that holds one is rewritten as it stands in the dump, escaped (the rules compiled
for MariaDB's escaping, :meth:`~forge_ci.sync.replace.Rules.encoded`); a value that looks
serialized is unescaped, rewritten (:meth:`~forge_ci.sync.replace.Rules.rewrite_value`)
and escaped again, as its lengths count the stored bytes. Unchanged values are always
copied as they were.

**Columns left alone** (:class:`Options.keep`): ``guid`` by default (WordPress's
feed identifiers must not change), plus any ``column`` (in every table) or
``table.column`` the config lists. ``_binary '…'``, ``b'…'``, hex, numbers and
``NULL`` are never rewritten.

**Excluded tables** (:class:`Options.exclude_tables`): every statement naming one is
dropped from the stream: its ``DROP TABLE``, ``CREATE TABLE``, ``LOCK TABLES``, the
``ALTER TABLE … KEYS`` pair and its ``INSERT``\\ s. TO's own copy of an excluded table
is therefore left exactly as it was (none of FROM's data, not even its schema, is
written); sync should also pass ``--ignore-table`` to ``mariadb-dump`` so the data
does not travel at all.

**Dumps without column lists.** A dump made without ``--complete-insert`` (a backup
snapshot's) is read too: each ``CREATE TABLE`` that streams by gives its table's column
names, and an ``INSERT`` without a column list takes those. Only an ``INSERT`` into a
table whose ``CREATE TABLE`` the stream did not show is refused.

**Row hooks** (:class:`Options.scrub`, a :class:`Scrub`): every row of an ``INSERT``
into one of ``Scrub.tables`` is cut into its values and handed to ``Scrub.row``, which
returns the values to write instead (dump literals, escaped as ``mariadb-dump`` writes
them: :func:`quote` makes one). Anonymizing runs there, before the URL rewrite.

**Report.** :class:`Report` counts, per ``(table, column)``, the values changed and the
values that looked serialized, held a needle and could not be parsed (left untouched).
With ``dry_run`` the dump is read, rewritten and counted, and the original bytes are
yielded, so a dry run reports exactly what a real run would change.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from forge_ci.sync import SyncError
from forge_ci.sync.replace import Rules, Status

DUMP_FLAGS: tuple[str, ...] = (
    "--single-transaction",
    "--quick",
    "--skip-comments",
    "--skip-dump-date",
    "--complete-insert",
    "--extended-insert",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--net-buffer-length=1048576",
)

_NAME = rb"`((?:[^`]|``)+)`"
_INSERT = re.compile(
    rb"(?:INSERT(?: IGNORE)?|REPLACE) INTO " + _NAME + rb" (\((?:`(?:[^`]|``)*`(?:, ?)?)*\))"
    rb" VALUES "
)
_INSERT_NO_COLUMNS = re.compile(rb"(?:INSERT(?: IGNORE)?|REPLACE) INTO " + _NAME + rb" VALUES\s*")
# A column's line inside CREATE TABLE (keys and constraints do not start with a backtick).
_CREATE_COLUMN = re.compile(rb"  " + _NAME + rb" ")
_COLUMN = re.compile(_NAME)
# Statements that name a table and end on their own line ...
_TABLE_LINE = re.compile(rb"(?:DROP TABLE IF EXISTS|LOCK TABLES|/\*!40000 ALTER TABLE) " + _NAME)
# ... and the one that spans lines up to a line ending in ';'.
_CREATE = re.compile(rb"CREATE TABLE " + _NAME)

# Unrolled, so the engine loops once per escape, not once per byte.
_STRING = rb"'[^'\\]*+(?:(?:\\.|'')[^'\\]*+)*+'"
# A whole row: strings, and anything but quotes and parentheses between them.
_ROWS_UP_TO = re.compile(rb"(?:\((?:" + _STRING + rb"|[^'()]++)*+\),?\r?\n?)*+", re.S)
_BETWEEN_ROWS = re.compile(rb",\r?\n?")
# One value inside a row, then the separator after it.
_ONE_VALUE = rb"([^,'()]*+(?:" + _STRING + rb")?)"
_VALUE = re.compile(_ONE_VALUE + rb"([,)])", re.S)
# What may stand before a value's quoted literal (_binary, b) or be all of it (NULL, 12).
_UNQUOTED = re.compile(rb"[^,'()]*+")

_UNESCAPE = re.compile(rb"\\(.)|''", re.S)
# replace.py's "looks serialized" as it reads in an escaped literal ('"' is '\\"').
_LOOKS_SERIALIZED_ESCAPED = re.compile(
    rb'(?:a:[0-9]+:\{|[OCEs]:[0-9]+:\\"|i:[+-]?[0-9]+;|d:[^;]*;|b:[01];|N;)'
)
_COMMON = tuple(
    (b"\\" + c, v)
    for c, v in (
        (b'"', b'"'),
        (b"'", b"'"),
        (b"n", b"\n"),
        (b"r", b"\r"),
        (b"0", b"\x00"),
        (b"Z", b"\x1a"),
        (b"t", b"\t"),
        (b"b", b"\x08"),
    )
)
_UNESCAPES = {
    b"0": b"\x00",
    b"b": b"\x08",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"Z": b"\x1a",
    # MariaDB keeps the backslash before % and _ (they are LIKE wildcards).
    b"%": b"\\%",
    b"_": b"\\_",
}


class Scrub(Protocol):
    """A row hook: see "Row hooks" in the module docstring."""

    @property
    def tables(self) -> frozenset[str]: ...

    def touches(self, table: str, statement: bytes) -> bool:
        """False when no row of STATEMENT can need a change (a cheap look first)."""
        ...

    def row(self, table: str, columns: Sequence[str], values: list[bytes]) -> list[bytes]:
        """The row's values as dump literals (``'a\\'b'``, ``12``, ``NULL``), rewritten."""
        ...


@dataclass(frozen=True)
class Options:
    """What the rewriter leaves alone; see the module docstring."""

    keep: frozenset[str] = frozenset({"guid"})  # "column" or "table.column"
    exclude_tables: frozenset[str] = frozenset()
    dry_run: bool = False
    scrub: Scrub | None = None


@dataclass
class Report:
    """Counts per (table, column), filled in while the dump streams."""

    changed: Counter[tuple[str, str]] = field(default_factory=Counter)
    unparsable: Counter[tuple[str, str]] = field(default_factory=Counter)
    excluded_statements: Counter[str] = field(default_factory=Counter)
    scrubbed: Counter[str] = field(default_factory=Counter)  # rows changed by Options.scrub

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())

    @property
    def total_unparsable(self) -> int:
        return sum(self.unparsable.values())

    def lines(self) -> list[str]:
        """Human-readable rows: ``table.column: N changed, M unparsable``."""
        keys = sorted(set(self.changed) | set(self.unparsable))
        return [
            f"{table}.{column}: {self.changed[(table, column)]} changed, "
            f"{self.unparsable[(table, column)]} left untouched (serialized, unparsable)"
            for table, column in keys
        ]


def rewrite_dump(
    chunks: Iterable[bytes], rules: Rules, options: Options, report: Report
) -> Iterator[bytes]:
    """Yield the dump with every value rewritten; counts go into REPORT as it streams."""
    # The same rules on the literals' escaped bytes: text needs no unescaping.
    escaped = rules.encoded(_escape)
    in_excluded_create = False
    insert: list[bytes] = []  # the lines of an INSERT that goes on (one row a line)
    columns_of: dict[str, list[str]] = {}  # from each CREATE TABLE seen
    creating: list[str] | None = None
    for line in _lines(chunks):
        if creating is not None:
            column = _CREATE_COLUMN.match(line)
            if column is not None:
                creating.append(_unquote(column.group(1)))
            if _ends_statement(line):
                creating = None
        elif line.startswith(b"CREATE TABLE"):
            create = _CREATE.match(line)
            if create is not None and not _ends_statement(line):
                creating = columns_of[_unquote(create.group(1))] = []
        if insert:
            insert.append(line)
            if not _ends_statement(line):
                continue
            line = b"".join(insert)
            insert = []
        elif line.startswith((b"INSERT", b"REPLACE")) and not _ends_statement(line):
            insert.append(line)
            continue
        if in_excluded_create:
            in_excluded_create = not _ends_statement(line)
            continue
        table = _excluded(line, options.exclude_tables)
        if table is not None:
            report.excluded_statements[table] += 1
            in_excluded_create = line.startswith(b"CREATE") and not _ends_statement(line)
            continue
        if not line.startswith((b"INSERT", b"REPLACE")):
            yield line
            continue
        new = line
        if options.scrub is not None:
            new = _scrub_insert(new, options.scrub, columns_of, report)
        if escaped.needles.search(new) is not None:
            new = _rewrite_insert(new, rules, escaped, options, report, columns_of)
        yield line if options.dry_run else new
    if insert:
        raise SyncError(
            "the dump ends inside an INSERT statement",
            hint="the dump was cut short: check that mariadb-dump finished without an error",
        )


def _ends_statement(line: bytes) -> bool:
    return line.rstrip(b"\r\n").endswith(b";")


def count_dump(chunks: Iterable[bytes], rules: Rules, options: Options) -> Report:
    """A dry run: read the whole stream and return what a real run would change."""
    report = Report()
    dry = Options(keep=options.keep, exclude_tables=options.exclude_tables, dry_run=True,
                  scrub=options.scrub)
    for _ in rewrite_dump(chunks, rules, dry, report):
        pass
    return report


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines (with their newline) out of chunks of any size, without quadratic copies."""
    parts: list[bytes] = []
    for chunk in chunks:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if parts:
                parts.append(chunk[start : newline + 1])
                yield b"".join(parts)
                parts = []
            else:
                yield chunk[start : newline + 1]
            start = newline + 1
        if start < len(chunk):
            parts.append(chunk[start:])
    if parts:
        yield b"".join(parts)


def _excluded(line: bytes, tables: frozenset[str]) -> str | None:
    if not tables:
        return None
    for pattern in (_TABLE_LINE, _CREATE, _INSERT_NO_COLUMNS, _INSERT):
        match = pattern.match(line)
        if match is not None:
            name = _unquote(match.group(1))
            return name if name in tables else None
    return None


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", "surrogateescape")


def _head(line: bytes, columns_of: dict[str, list[str]]) -> tuple[str, list[str], int]:
    """An INSERT's table, its columns, and where its first row starts."""
    head = _INSERT.match(line)
    if head is not None:
        columns = [_unquote(c) for c in _COLUMN.findall(head.group(2))]
        return _unquote(head.group(1)), columns, head.end()
    bare = _INSERT_NO_COLUMNS.match(line)
    if bare is not None and _unquote(bare.group(1)) in columns_of:
        return _unquote(bare.group(1)), columns_of[_unquote(bare.group(1))], bare.end()
    where = f" into `{_unquote(bare.group(1))}`" if bare else ""
    raise SyncError(
        f"the dump has an INSERT{where} without its column list or CREATE TABLE",
        hint="make the dump with mariadb-dump --complete-insert",
    )


def _scrub_insert(
    line: bytes, scrub: Scrub, columns_of: dict[str, list[str]], report: Report
) -> bytes:
    """Every row of an INSERT into one of SCRUB's tables, through ``scrub.row``."""
    table, columns, pos = _head(line, columns_of)
    if table not in scrub.tables or not scrub.touches(table, line):
        return line
    out = [line[:pos]]
    while line[pos : pos + 1] == b"(":
        values, end = _split_row(line, pos, table, len(columns))
        new = scrub.row(table, columns, values)
        if new != values:
            report.scrubbed[table] += 1
            out.append(b"(" + b",".join(new) + b")")
        else:
            out.append(line[pos:end])
        pos = end
        between = _BETWEEN_ROWS.match(line, pos)
        if between is None:
            break
        out.append(between.group())
        pos = between.end()
    out.append(line[pos:])
    return b"".join(out)


def _split_row(line: bytes, start: int, table: str, count: int) -> tuple[list[bytes], int]:
    """The values of the row whose '(' is at START, and the offset after its ')'."""
    values: list[bytes] = []
    pos = start + 1
    while True:
        value = _VALUE.match(line, pos)
        if value is None:
            raise _unreadable(table, pos)
        values.append(value.group(1))
        pos = value.end()
        if value.group(2) == b")":
            break
    if len(values) != count:
        raise SyncError(
            f"a row of table `{table}` does not have its {count} columns",
            hint="make the dump with the flags forge_ci.sync.sqldump.DUMP_FLAGS lists",
        )
    return values, pos


def quote(value: bytes) -> bytes:
    """VALUE as a dump literal, escaped as ``mariadb-dump`` escapes it."""
    return b"'" + _escape(value) + b"'"


def unquote(literal: bytes) -> bytes | None:
    """A dump literal's stored bytes; None for anything but a quoted string."""
    if len(literal) < 2 or literal[:1] != b"'" or literal[-1:] != b"'":
        return None
    return _unescape(literal[1:-1])


def _rewrite_insert(
    line: bytes,
    rules: Rules,
    escaped: Rules,
    options: Options,
    report: Report,
    columns_of: dict[str, list[str]],
) -> bytes:
    table, columns, pos = _head(line, columns_of)
    keep = [c in options.keep or f"{table}.{c}" in options.keep for c in columns]
    needles = escaped.needles
    out = [line[:pos]]
    while True:
        needle = needles.search(line, pos)
        if needle is None:
            break
        # No value holds a raw newline, so a line of the statement holds whole rows:
        # every row before the needle's line is copied as it is, unread ...
        start = line.rfind(b"\n", pos, needle.start()) + 1
        if start > pos:
            out.append(line[pos:start])
            pos = start
        # ... and the rows of its line are cut into values (_cut_row), up to the one
        # the needle is in.
        while True:
            row = _cut_row(line, pos, len(columns))
            if row is None:
                _split_row(line, pos, table, len(columns))  # raises the error that says why
                raise _unreadable(table, pos)
            if row.end > needle.start():
                break
            out.append(line[pos : row.end])
            pos = _after_row(line, row.end, out)
        out.append(_rewrite_row(line, row, needle, table, columns, keep, (rules, escaped), report))
        pos = _after_row(line, row.end, out)
    out.append(line[pos:])
    return b"".join(out)


def _after_row(line: bytes, end: int, out: list[bytes]) -> int:
    """Past the separator after a row that ends at END (copied into OUT)."""
    between = _BETWEEN_ROWS.match(line, end)
    if between is None:
        return end
    out.append(between.group())
    return between.end()


def _rewrite_row(
    line: bytes,
    row: _Row,
    needle: re.Match[bytes],
    table: str,
    columns: list[str],
    keep: list[bool],
    rules: tuple[Rules, Rules],
    report: Report,
) -> bytes:
    """ROW with the values that hold a needle rewritten."""
    out: list[bytes] = []
    copied = row.start
    search = rules[1].needles.search
    starts, ends = row.starts, row.ends
    found: re.Match[bytes] | None = needle
    while found is not None:
        at = found.start()
        index = bisect.bisect_right(starts, at) - 1  # its value
        begin, end = starts[index], ends[index]
        if at >= end:  # between values
            found = search(line, found.end(), row.end)
            continue
        # A value is looked at once: the next needle is searched for after it.
        if not keep[index] and line[begin : begin + 1] == b"'":
            literal = line[begin:end]
            new = _rewrite_literal(literal, rules, (table, columns[index]), report)
            if new is not literal:
                out.append(line[copied:begin])
                out.append(new)
                copied = end
        found = search(line, end, row.end)
    if not out:
        return line[copied : row.end]
    out.append(line[copied : row.end])
    return b"".join(out)


class _Row(NamedTuple):
    """Where a row of an INSERT is: its '(', each value, and past its ')'."""

    start: int
    starts: list[int]
    ends: list[int]
    end: int


# Rows longer than this are cut by _cut_long_row.
_LONG_ROW = 1024


def _cut_row(line: bytes, start: int, count: int) -> _Row | None:
    """The row of COUNT values whose '(' is at START, or None where it does not read."""
    if line.find(b"\n", start, start + _LONG_ROW) < 0 and len(line) - start > _LONG_ROW:
        return _cut_long_row(line, start, count)
    row = _row_pattern(count).match(line, start)
    if row is None:
        return None
    spans = row.regs[1:]  # each value's
    return _Row(start, [b for b, _ in spans], [e for _, e in spans], row.end())


@functools.lru_cache(maxsize=64)
def _row_pattern(count: int) -> re.Pattern[bytes]:
    """A row of COUNT values, each value a group (so one match cuts the row)."""
    return re.compile(rb"\(" + rb",".join([_ONE_VALUE] * count) + rb"\)", re.S)


def _cut_long_row(line: bytes, start: int, count: int) -> _Row | None:
    """As _cut_row, but each quoted literal's end is found by ``bytes.find`` (quote to
    quote, skipping escaped and doubled ones) rather than by the regex engine's loop
    over every byte: three times faster on a post's content, slower on short rows.
    """
    if line[start : start + 1] != b"(":
        return None
    starts: list[int] = []
    ends: list[int] = []
    pos = start + 1
    unquoted = _UNQUOTED.match
    for index in range(count):
        head = unquoted(line, pos)  # matches, if only the empty string
        end = pos if head is None else head.end()
        if line[end : end + 1] == b"'":
            end = _literal_end(line, end)
            if end < 0:
                return None
        starts.append(pos)
        ends.append(end)
        if line[end : end + 1] != (b")" if index == count - 1 else b","):
            return None
        pos = end + 1
    return _Row(start, starts, ends, pos)


def _literal_end(line: bytes, quote: int) -> int:
    """Past the closing quote of the literal opened at QUOTE; -1 if it is not closed."""
    pos = quote + 1
    while True:
        at = line.find(b"'", pos)
        if at < 0:
            return -1
        escapes = at
        while line[escapes - 1] == 0x5C:  # the backslashes right before it
            escapes -= 1
        if (at - escapes) % 2:  # an odd run: the last one escapes this quote
            pos = at + 1
        elif line[at + 1 : at + 2] == b"'":  # a doubled quote
            pos = at + 2
        else:
            return at + 1


def _unreadable(table: str, pos: int) -> SyncError:
    return SyncError(
        f"cannot read a row of table `{table}` at byte {pos} of its INSERT",
        hint="make the dump with the flags forge_ci.sync.sqldump.DUMP_FLAGS lists",
    )


def _rewrite_literal(
    literal: bytes, rules: tuple[Rules, Rules], where: tuple[str, str], report: Report
) -> bytes:
    """A quoted literal: text rewritten as it stands (escaped), serialized data decoded."""
    body = literal[1:-1]
    if b"''" not in body and _LOOKS_SERIALIZED_ESCAPED.match(body) is None:
        new = rules[1].rewrite_text(body)
        if new is body:
            return literal
        report.changed[where] += 1
        return b"'" + new + b"'"
    raw = _unescape(literal[1:-1])
    new, status = rules[0].rewrite_value(raw)
    if status is Status.CHANGED:
        report.changed[where] += 1
        return b"'" + _escape(new) + b"'"
    if status is Status.UNPARSABLE:
        report.unparsable[where] += 1
    return literal


def _unescape(raw: bytes) -> bytes:
    """A literal's content as stored. The common escapes by bytes.replace, between the
    escaped backslashes (split first, left to right, as the escapes read); any other
    escape left over goes through the regex."""
    if b"\\" not in raw:
        return raw.replace(b"''", b"'")
    # Serialized data escapes little but its quotes: one replace then, when every
    # backslash was one of theirs (none is left, so none escaped another).
    quotes = raw.replace(b'\\"', b'"')
    if b"\\" not in quotes:
        return quotes.replace(b"''", b"'")
    parts = raw.split(b"\\\\")
    for i, part in enumerate(parts):
        if b"\\" not in part:
            parts[i] = part.replace(b"''", b"'")
            continue
        for escaped, char in _COMMON:
            part = part.replace(escaped, char)
        if b"\\" in part:
            return _UNESCAPE.sub(_unescape_one, raw)
        parts[i] = part.replace(b"''", b"'")
    return b"\\".join(parts)


def _unescape_one(match: re.Match[bytes]) -> bytes:
    char = match.group(1)
    if char is None:
        return b"'"
    return _UNESCAPES.get(char, char)


def _escape(value: bytes) -> bytes:
    """As mariadb-dump writes a literal: backslash first, then the rest."""
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\x00", b"\\0")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\x1a", b"\\Z")
        .replace(b"'", b"\\'")
        .replace(b'"', b'\\"')
    )
