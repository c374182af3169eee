"""The database half of a snapshot: ``mariadb-dump`` out, ``mariadb`` in, both on the host.

Dump: ``mariadb-dump`` (else ``mysqldump``) runs on the backup host with
``--single-transaction --quick --routines --triggers --hex-blob``: one consistent
InnoDB read, row by row. Its stdout streams over the Host seam into zstd, age and
the store, so the dump is never whole in memory nor on the runner's disk. The dump
is accepted only if the tool exits 0 *and* the stream ends with its
``-- Dump completed`` trailer; otherwise the put is abandoned from inside the stream
(nothing is published) and :class:`DumpError` is raised.

Import: ``mariadb`` (else ``mysql``) on the host reads the SQL on stdin. Callers feed
it only data that was authenticated to the end first (see :mod:`forge_ci.backup.restore`).

Credentials: an option file, never the command line. For the dump it is read from
``/dev/stdin`` (the dump does not need stdin); for the import stdin carries the SQL,
so the first bytes are copied by ``dd`` into a ``mktemp`` file (umask 077) that a
trap removes when the script ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forge_ci._malloc import READ_SIZE
from forge_ci.backup.errors import DumpError
from forge_ci.config.backup import DatabaseConfig
from forge_ci.errors import ConnectError, RemoteCommandError
from forge_ci.remote import Host, Process, sh

if TYPE_CHECKING:  # loaded by dump_database: sync imports only the import side
    from forge_ci.backup.repo import Repository
    from forge_ci.backup.snapshot import DatabaseEntry

DUMP_FLAGS = ("--single-transaction", "--quick", "--routines", "--triggers", "--hex-blob",
              "--no-tablespaces", "--default-character-set=utf8mb4")
TRAILER = "-- Dump completed"
TRAILER_RE = re.compile(rb"\n-- Dump completed(?: on [^\n]*)?\n*\Z")
_TOOL_RE = re.compile(rb"^-- ((?:MariaDB|MySQL) dump [^\n]*)$", re.M)
_TAIL = 512
_SAFE_DB = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_NOT_FOUND = 127  # dump_script's exit when neither tool is installed (as sh's own)


def has_trailer(tail: bytes) -> bool:
    """True if ``tail`` (the last bytes of a dump) ends with the completion trailer."""
    return TRAILER_RE.search(tail) is not None


def check_database_name(name: str) -> str:
    """Names forge will quote into SQL: letters, digits, ``_``, ``$``, ``-``."""
    if not _SAFE_DB.match(name):
        raise DumpError(f"database name {name!r} is not supported",
                        hint="use letters, digits, _, $ and - only")
    return name


def option_file(db: DatabaseConfig) -> bytes:
    """A ``[client]`` option file. Values are double-quoted with ``\\`` and ``"`` escaped,
    which MariaDB and MySQL both unescape."""
    def q(value: str) -> str:
        if "\n" in value or "\r" in value:
            raise DumpError("database user or password contains a line break",
                            hint="option files cannot carry it; change the password")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[client]", f"user={q(db.user)}", f"password={q(db.password.get_secret_value())}",
             f"host={q(db.host)}"]
    if db.port is not None:
        lines.append(f"port={db.port}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def dump_script(name: str) -> str:
    return (
        "tool=$(command -v mariadb-dump || command -v mysqldump) || "
        "{ echo 'neither mariadb-dump nor mysqldump is installed' >&2; exit 127; }\n"
        f'exec "$tool" --defaults-extra-file=/dev/stdin {" ".join(DUMP_FLAGS)} '
        f"-- {sh(check_database_name(name))}"
    )


def import_script(name: str, option_size: int, *, create: bool) -> str:
    db = check_database_name(name)
    statement = f"CREATE DATABASE IF NOT EXISTS `{db}`"
    create_sql = f'"$tool" --defaults-extra-file="$f" -e {sh(statement)} || exit 1\n'
    return (
        "umask 077\n"
        "tool=$(command -v mariadb || command -v mysql) || "
        "{ echo 'neither mariadb nor mysql (client) is installed' >&2; exit 127; }\n"
        'f=$(mktemp) || exit 1\n'
        "trap 'rm -f \"$f\"' EXIT HUP INT TERM\n"
        f'dd bs=1 count={option_size} of="$f" 2>/dev/null || exit 1\n'
        + (create_sql if create else "")
        + f'"$tool" --defaults-extra-file="$f" --binary-mode -- {sh(db)}\n'
    )


@dataclass
class _Watch:
    """Keeps the first line naming the tool and the last bytes (for the trailer)."""

    head: bytes = b""
    tail: bytes = b""

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if len(self.head) < 4096:
                self.head += chunk[: 4096 - len(self.head)]
            self.tail = (self.tail + chunk)[-_TAIL:]
            yield chunk

    def tool(self) -> str:
        m = _TOOL_RE.search(self.head)
        return m.group(1).decode("utf-8", "replace").strip() if m else "unknown dump tool"


def _read_all(proc: Process) -> Iterator[bytes]:
    while chunk := proc.read(READ_SIZE):
        yield chunk


def dump_database(host: Host, db: DatabaseConfig, repo: Repository,
                  key: str) -> tuple[DatabaseEntry, int]:
    """Stream a dump of ``db`` into ``key``; return its manifest entry and stored size."""
    from forge_ci.backup.objects import Digest, on_end
    from forge_ci.backup.snapshot import DatabaseEntry

    proc = host.start(dump_script(db.name))
    watch, digest = _Watch(), Digest()

    def finish() -> None:
        status = proc.wait(timeout=300)
        err = proc.stderr().decode("utf-8", "replace").strip().splitlines()[-5:]
        detail = (": " + " / ".join(err)) if err else ""
        if status == _NOT_FOUND:
            where = "this machine" if host.name == "local" else host.name
            raise DumpError(f"mariadb-dump (or mysqldump) is not installed on {where}: "
                            f"cannot dump database {db.name!r}",
                            hint=f"install the MariaDB client on {where} (Debian/Ubuntu: "
                                 "sudo apt-get install mariadb-client); no snapshot was "
                                 "written")
        if status != 0:
            raise DumpError(f"dumping database {db.name!r} on {host.name} failed "
                            f"(exit {status}){detail}",
                            hint="check the database credentials and that the user may "
                                 "read routines and triggers; no snapshot was written")
        if not has_trailer(watch.tail):
            raise DumpError(f"the dump of {db.name!r} on {host.name} was cut short (no "
                            f"'{TRAILER}' trailer){detail}", hint="no snapshot was written")

    try:
        try:
            proc.write(option_file(db))
            proc.close_stdin()
        except (OSError, RemoteCommandError, ConnectError):
            pass  # the script ended before reading (no tool): finish() or wait says why
        stream = on_end(watch.tee(digest.tee(_read_all(proc))), finish)
        stored = repo.put(key, stream, mode="compress")
    except BaseException:
        proc.kill()
        raise
    entry = DatabaseEntry(name=db.name, object=key, size=digest.size, sha256=digest.hexdigest,
                          tool=watch.tool(), trailer=TRAILER)
    return entry, stored


def import_database(host: Host, db: DatabaseConfig, target: str, sql: Iterable[bytes], *,
                    create: bool) -> None:
    """Feed ``sql`` (already authenticated) to the client on the host, into ``target``."""
    options = option_file(db)
    proc = host.start(import_script(target, len(options), create=create))
    try:
        try:
            proc.write(options)
            for chunk in sql:
                proc.write(chunk)
        except (OSError, RemoteCommandError):
            pass  # the client stopped reading: its exit status and stderr say why
        status = proc.wait(timeout=None)
    except BaseException:
        proc.kill()
        raise
    if status != 0:
        err = proc.stderr().decode("utf-8", "replace").strip().splitlines()[-5:]
        hint = ("the database may be partly restored: fix the cause and run the restore "
                "again")
        if create:
            hint = (f"a drill database must exist and be writable by {db.user!r} (or that "
                    f"user needs CREATE): GRANT ALL ON `{target}`.* TO '{db.user}'@...")
        raise DumpError(f"importing into database {target!r} on {host.name} failed "
                        f"(exit {status}): {' / '.join(err)}", hint=hint)
