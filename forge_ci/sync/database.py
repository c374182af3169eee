"""The database end of a sync, on a Host: dump, import, query, undo snapshot.

Credentials travel as a ``[client]`` option file on stdin (as for backups, see
:mod:`forge_ci.backup.dump`), never on a command line. The dump streams out of
``mariadb-dump`` on FROM's host and into ``mariadb`` on TO's host; neither side
writes it to a file.

**Undo snapshot.** Before anything is imported, TO's database is dumped *on TO's
host* into ``<path>/.forge/sync/<id>.sql.gz`` (mode 0600, gzip; it never crosses the
network, needs no backup keys, and exists even for environments without a backup
store). ``forge-ci sync-undo TO <id>`` drops every table and view of TO's database
and imports that file, so TO is exactly as before the sync, tables the sync added
included. The three newest snapshots are kept.

**Table order.** A sync is a pipeline of two busy stages: forge's rewriter, then the
server's import. They cost different tables differently: WordPress's options (nearly
all serialized PHP) cost the rewriter several times what they cost the import, posts
and post meta the other way round. In ``mariadb-dump``'s alphabetical order the options
come first, so the server idles while the rewriter grinds them, then the rewriter idles
while the server imports the posts. So a live dump names its tables in the order of
:func:`dump_order` (posts and the like first, options last; the list and sizes come
from information_schema in the client run that reads FROM's URLs), and the rewriter may
run up to ``REWRITTEN_AHEAD`` bytes ahead of the import (:func:`ahead`). Every table
imports the same either way (triggers follow their table); a database with views keeps
the dump's own order (a view's placeholder table relies on it).
"""

from __future__ import annotations

import collections
import posixpath
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from forge_ci._malloc import READ_SIZE
from forge_ci.backup.dump import check_database_name, import_database, option_file
from forge_ci.config.backup import DatabaseConfig
from forge_ci.errors import SyncError
from forge_ci.remote import Host, sh
from forge_ci.sync.sqldump import DUMP_FLAGS

KEEP_SNAPSHOTS = 3
_SNAPSHOT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_CLIENT = ("tool=$(command -v mariadb || command -v mysql) || "
           "{ echo 'neither mariadb nor mysql (client) is installed' >&2; exit 127; }\n")
_DUMPER = ("dumper=$(command -v mariadb-dump || command -v mysqldump) || "
           "{ echo 'neither mariadb-dump nor mysqldump is installed' >&2; exit 127; }\n")


def _options_from_stdin(size: int) -> str:
    """Shell that copies the option file (the first SIZE bytes of stdin) to "$f"."""
    return ("umask 077\n"
            "f=$(mktemp) || exit 1\n"
            "trap 'rm -f \"$f\"' EXIT HUP INT TERM\n"
            f'dd bs=1 count={size} of="$f" 2>/dev/null || exit 1\n')


def _dump_command(db: DatabaseConfig, exclude: Sequence[str], options: str,
                  tables: Sequence[str] = ()) -> str:
    name = check_database_name(db.name)
    ignore = "".join(f" {sh('--ignore-table=' + name + '.' + t)}" for t in exclude)
    named = "".join(f" {sh(t)}" for t in tables)
    return (f'"$dumper" --defaults-extra-file={options} {" ".join(DUMP_FLAGS)} '
            f"--no-tablespaces{ignore} -- {sh(name)}{named}")


def dump(host: Host, db: DatabaseConfig, exclude: Sequence[str] = (),
         tables: Sequence[str] = ()) -> Iterator[bytes]:
    """FROM's dump as chunks, streamed; SyncError at the end if the tool failed.

    TABLES, when given, are dumped in that order (see :func:`dump_order`); else the
    whole database in ``mariadb-dump``'s own (alphabetical) order."""
    proc = host.start(_DUMPER + "exec " + _dump_command(db, exclude, "/dev/stdin", tables))
    try:
        proc.write(option_file(db))
        proc.close_stdin()
        while chunk := proc.read(READ_SIZE):
            yield chunk
    except BaseException:
        proc.kill()
        raise
    status = proc.wait(timeout=300)
    if status != 0:
        err = proc.stderr().decode("utf-8", "replace").strip().splitlines()[-5:]
        raise SyncError(f"mariadb-dump of {db.name!r} on {host.name} failed (exit {status}): "
                        + " / ".join(err),
                        hint="check the database credentials in forge.yml (database:)")


class Table(NamedTuple):
    """A table (or view) of FROM's database, as information_schema tells it."""

    name: str
    view: bool
    size: int  # data_length: bytes, an estimate


# Tables whose rows are mostly serialized PHP (WordPress's options, multisite's
# sitemeta): rewriting them costs the rewriter several times what importing them costs
# the server.
_REWRITE_HEAVY = re.compile(r"(?:^|_)(?:options|sitemeta)$")
# The names go on the dump's command line, which travels as one argument of the
# host's shell (Linux takes 128 KiB at most): above this many bytes of names, the
# dump keeps its own order.
MAX_NAMES_BYTES = 64 * 1024


def dump_order(tables: Sequence[Table], exclude: Sequence[str] = ()) -> list[str]:
    """The order to dump TABLES in so that rewriting and importing overlap; [] for
    ``mariadb-dump``'s own order (a database with views, whose placeholders rely on it;
    names the client's batch output escapes; more names than :data:`MAX_NAMES_BYTES`).

    The sync is a two-stage flow shop (the rewriter, then the server's import), and
    Johnson's rule orders it: first the tables that cost the import more than the
    rewriter, smallest first (the server starts early), then the rewrite-heavy ones
    (options-like: serialized PHP), largest first (the server has little left to do
    after the rewriter's last table). Each table's costs are taken as its size times a
    per-kind rate, so size orders each group. Triggers come with their tables."""
    if (not tables or any(t.view for t in tables)
            or sum(len(t.name.encode()) + 3 for t in tables) > MAX_NAMES_BYTES
            or any("\\" in t.name for t in tables)):
        return []
    skip = set(exclude)
    kept = [t for t in tables if t.name not in skip]
    light = sorted((t for t in kept if not _REWRITE_HEAVY.search(t.name)),
                   key=lambda t: (t.size, t.name))
    heavy = sorted((t for t in kept if _REWRITE_HEAVY.search(t.name)),
                   key=lambda t: (-t.size, t.name))
    return [t.name for t in light + heavy]


def load(host: Host, db: DatabaseConfig, sql: Iterable[bytes]) -> None:
    """Feed SQL to ``mariadb`` on the host, into DB (which must exist)."""
    import_database(host, db, db.name, sql, create=False)


_END = object()


class _Packed(NamedTuple):
    """A chunk held compressed while it waits (see :func:`ahead`'s PACK_ABOVE)."""

    data: bytes
    size: int  # the chunk's own size


def ahead(chunks: Iterable[bytes], depth: int = 32, max_bytes: int | None = None,
          pack_above: int | None = None) -> Generator[bytes, None, None]:
    """CHUNKS produced by a thread of their own, at most DEPTH chunks (and, with
    MAX_BYTES, at most that many bytes, though always one chunk) ahead of the consumer.

    With PACK_ABOVE, a chunk that arrives while more than that many bytes already wait
    is held zstd-compressed (level 1) and counts towards MAX_BYTES by its compressed
    size: SQL text shrinks 3-5 times, so the producer can run that much further ahead
    in the same memory. The compressing is done by the producer only while it is
    ahead (when it is the slower stage, nothing waits and nothing is compressed).

    So reading the dump, rewriting it and writing it into ``mariadb`` overlap (pipe
    reads and writes release the GIL) instead of waiting on each other. An exception
    in the producer is raised in the consumer; a consumer that stops early (closes
    the generator) stops the producer at its next chunk.
    """
    box: collections.deque[object] = collections.deque()
    held = [0]  # bytes in BOX
    cond = threading.Condition()
    stop = threading.Event()
    limit = max_bytes if max_bytes is not None else float("inf")
    pack: Callable[[bytes], bytes] | None = None
    unpack: Callable[[bytes, int], bytes] | None = None
    if pack_above is not None:
        import zstandard  # only a sync that holds statements ahead needs it

        pack = zstandard.ZstdCompressor(level=1).compress
        unpack = zstandard.ZstdDecompressor().decompress

    def put(item: object, size: int) -> bool:
        with cond:
            while box and (len(box) >= depth or held[0] + size > limit):
                if stop.is_set():
                    return False
                cond.wait(0.2)
            if stop.is_set():
                return False
            box.append(item)
            held[0] += size
            cond.notify_all()
            return True

    source = iter(chunks)

    def produce() -> None:
        try:
            for chunk in source:
                item: object = chunk
                if pack is not None and pack_above is not None and held[0] > pack_above:
                    item = _Packed(pack(chunk), len(chunk))
                size = len(item.data) if isinstance(item, _Packed) else len(chunk)
                if not put(item, size):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            put(e, 0)
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator upstream stops too (a dump process is killed)
        put(_END, 0)

    worker = threading.Thread(target=produce, name="forge-sync-ahead", daemon=True)
    worker.start()
    try:
        while True:
            with cond:
                while not box:
                    cond.wait()
                item = box.popleft()
                if isinstance(item, bytes):
                    held[0] -= len(item)
                elif isinstance(item, _Packed):
                    held[0] -= len(item.data)
                cond.notify_all()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Packed):
                assert unpack is not None
                item = unpack(item.data, item.size)
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        with cond:
            cond.notify_all()
        worker.join(timeout=30)


def query(host: Host, db: DatabaseConfig, sql: str) -> list[list[str]]:
    """Run SQL; rows of tab-separated text (batch mode, no header)."""
    options = option_file(db)
    script = (_CLIENT + _options_from_stdin(len(options))
              + f'"$tool" --defaults-extra-file="$f" -N -B -- {sh(check_database_name(db.name))}\n')
    r = host.run(script, input=options + sql.encode(), check=False)
    if r.status != 0:
        raise SyncError(f"a query on database {db.name!r} on {host.name} failed "
                        f"(exit {r.status}): {r.tail(3)}",
                        hint="check the database credentials in forge.yml (database:)")
    return [line.split("\t") for line in r.text.splitlines() if line]


def _table(prefix: str, name: str) -> str:
    """A WordPress table's quoted name; the prefix is checked (letters, digits, ``_``)."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,32}", prefix):
        raise SyncError(f"table prefix {prefix!r} is not supported",
                        hint="sync.table_prefix: letters, digits and _ only")
    return f"{prefix}{name}"


def home_urls(host: Host, db: DatabaseConfig, prefix: str) -> dict[str, str]:
    """``home`` and ``siteurl`` from the options table, when it is there."""
    return look(host, db, prefix, tables=False)[0]


def look(host: Host, db: DatabaseConfig, prefix: str, *,
         tables: bool = True) -> tuple[dict[str, str], list[Table]]:
    """``home`` and ``siteurl`` (see :func:`home_urls`) and, with TABLES, the database's
    tables and views: one client run."""
    table = _table(prefix, "options")
    # Only checked names are formatted into these statements (see _table).
    sql = _if_table(table, [
        "SELECT option_name, option_value FROM "  # noqa: S608
        f"`{table}` WHERE option_name IN ('home', 'siteurl')"])
    if tables:
        sql += ("SELECT 'forge-table', table_name, table_type = 'VIEW', "
                "COALESCE(data_length, 0) FROM information_schema.tables "
                "WHERE table_schema = DATABASE();\n")
    rows = query(host, db, sql)
    found = [Table(r[1], r[2] == "1", int(r[3])) for r in rows
             if len(r) == 4 and r[0] == "forge-table"]
    return {r[0]: r[1] for r in rows if len(r) == 2}, found


def _if_table(table: str, statements: Sequence[str]) -> str:
    """SQL that runs STATEMENTS only when TABLE is in the database: one client run,
    where a look-up first would take two (each a process start on the host)."""
    found = ("SELECT COUNT(*) FROM information_schema.tables "  # noqa: S608
             f"WHERE table_schema = DATABASE() AND table_name = '{table}'")
    sql = f"SET @forge_found = ({found}) > 0;\n"
    for statement in statements:
        # Forge's own statements (checked table names), quoted as one SQL string.
        literal = statement.replace("\\", "\\\\").replace("'", "''")
        sql += (f"SET @forge_sql = IF(@forge_found, '{literal}', "  # noqa: S608
                "'SELECT 0 FROM DUAL WHERE 0');\n"
                "PREPARE forge_statement FROM @forge_sql;\nEXECUTE forge_statement;\n"
                "DEALLOCATE PREPARE forge_statement;\n")
    return sql


def after_import(host: Host, db: DatabaseConfig, prefix: str, *, public: bool) -> None:
    """Clear transients; a non-public target also gets ``blog_public = 0``."""
    table = _table(prefix, "options")
    statements = [f"DELETE FROM `{table}` WHERE option_name LIKE '\\_transient\\_%' "  # noqa: S608
                  "OR option_name LIKE '\\_site\\_transient\\_%'"]
    if not public:
        statements.append(f"UPDATE `{table}` SET option_value = '0' "  # noqa: S608
                          "WHERE option_name = 'blog_public'")
    query(host, db, _if_table(table, statements))


def snapshot_dir(root: str) -> str:
    return posixpath.join(root, ".forge", "sync")


def new_snapshot_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def take_snapshot(host: Host, db: DatabaseConfig, root: str, sid: str) -> str:
    """Dump TO's database into a gzip file on its host; return the file's path."""
    folder = snapshot_dir(root)
    path = posixpath.join(folder, f"{sid}.sql.gz")
    tmp = path + ".part"
    script = (
        _DUMPER + "umask 077\n"
        f"mkdir -p -- {sh(folder)} || exit 1\n"
        f"( {_dump_command(db, (), '/dev/stdin')} || echo failed > {sh(tmp + '.err')} ) "
        f"| gzip -c > {sh(tmp)} || exit 1\n"
        f"if [ -e {sh(tmp + '.err')} ]; then rm -f -- {sh(tmp)} {sh(tmp + '.err')}; exit 1; fi\n"
        f"mv -f -- {sh(tmp)} {sh(path)} || exit 1\n"
        f"cd -- {sh(folder)} && ls -1 | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z\\.sql\\.gz$' | sort "
        f"| head -n -{KEEP_SNAPSHOTS} | while read -r old; do rm -f -- \"$old\"; done\n"
    )
    r = host.run(script, input=option_file(db), check=False, timeout=None)
    if r.status != 0:
        raise SyncError(f"the undo snapshot of database {db.name!r} on {host.name} failed "
                        f"(exit {r.status}): {r.tail(3)}",
                        hint="nothing was changed; check the credentials and free disk space "
                             f"under {folder}")
    return path


def undo(host: Host, db: DatabaseConfig, root: str, sid: str) -> str:
    """Put DB back exactly as snapshot SID holds it; return the file used."""
    if not _SNAPSHOT_ID.match(sid):
        raise SyncError(f"{sid!r} is not a sync snapshot id (like 20260101T120000Z)",
                        hint="use the id the sync printed")
    path = posixpath.join(snapshot_dir(root), f"{sid}.sql.gz")
    if host.run(f"test -f {sh(path)}", check=False).status != 0:
        raise SyncError(f"no sync snapshot {sid} on {host.name} ({path})",
                        hint=f"list them with: ls {snapshot_dir(root)}")
    options = option_file(db)
    name = sh(check_database_name(db.name))
    drops = ("SELECT CONCAT('DROP ', IF(table_type = 'VIEW', 'VIEW', 'TABLE'), "
             "' IF EXISTS `', REPLACE(table_name, '`', '``'), '`;') "
             "FROM information_schema.tables WHERE table_schema = DATABASE()")
    script = (
        _CLIENT + _options_from_stdin(len(options))
        + f'drops=$("$tool" --defaults-extra-file="$f" -N -B -e {sh(drops)} -- {name}) '
          "|| exit 1\n"
        + "{ echo 'SET FOREIGN_KEY_CHECKS=0;'; printf '%s\\n' \"$drops\"; "
          f"gzip -dc -- {sh(path)}; }} "
        + f'| "$tool" --defaults-extra-file="$f" --binary-mode -- {name}\n'
    )
    r = host.run(script, input=options, check=False, timeout=None)
    if r.status != 0:
        raise SyncError(f"restoring sync snapshot {sid} into {db.name!r} on {host.name} "
                        f"failed (exit {r.status}): {r.tail(3)}",
                        hint="fix the cause and run the same sync-undo again")
    return path
