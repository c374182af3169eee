"""A private MariaDB server: own datadir, socket and loopback port.

Starting one takes about a second, so the conftest keeps one per session and
hands each test a fresh database and user (`create_database`).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import leaks
from ._proc import (
    lab_root,
    on_free_port,
    port_open,
    require_binary,
    require_root,
    run,
    spawn,
    terminate,
    wait_or_stop,
)

_START_TIMEOUT = 60.0
# Root, not mysql: switching user clears the kernel's parent-death signal, and
# a mariadbd that outlives a killed pytest run would hold its port forever.
_SERVER_USER = "root"


@dataclass(frozen=True)
class Database:
    """One database and the user that owns it, reachable over TCP and the socket."""

    name: str
    user: str
    password: str = field(repr=False)
    host: str
    port: int
    socket: Path

    @property
    def host_port(self) -> str:
        """The DB_HOST value WordPress wants for TCP: `127.0.0.1:PORT`."""
        return f"{self.host}:{self.port}"


@dataclass
class MariaDB:
    """A running mariadbd. Root connects through the socket without a password."""

    workdir: Path
    port: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.workdir / "mysqld.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mariadb.log"

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run SQL as root; statements go on stdin so passwords stay off `ps`."""
        argv = [require_binary("mariadb"), "--no-defaults", "-uroot", f"--socket={self.socket}"]
        argv += ["--batch", "--skip-column-names"]
        if database:
            argv.append(database)
        return run(argv, what="mariadb client", input=statement)

    def create_database(self, prefix: str = "wp") -> Database:
        """A fresh database plus a user allowed only on it, from any loopback client."""
        suffix = secrets.token_hex(4)
        db = Database(
            name=f"{prefix}_{suffix}",
            user=f"u_{suffix}",
            password=_registered(secrets.token_urlsafe(18)),
            host="127.0.0.1",
            port=self.port,
            socket=self.socket,
        )
        self.sql(
            f"CREATE DATABASE `{db.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"
            f"CREATE USER '{db.user}'@'%' IDENTIFIED BY '{db.password}';\n"
            f"CREATE USER '{db.user}'@'localhost' IDENTIFIED BY '{db.password}';\n"
            f"GRANT ALL ON `{db.name}`.* TO '{db.user}'@'%';\n"
            f"GRANT ALL ON `{db.name}`.* TO '{db.user}'@'localhost';\n"
        )
        return db

    def drop_database(self, db: Database) -> None:
        self.sql(
            f"DROP DATABASE IF EXISTS `{db.name}`;\n"
            f"DROP USER IF EXISTS '{db.user}'@'%';\n"
            f"DROP USER IF EXISTS '{db.user}'@'localhost';\n"
        )

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout=30)
            self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_mariadb() -> MariaDB:
    """Initialise a datadir and start mariadbd on a free loopback port."""
    require_root()
    workdir = lab_root()
    datadir = workdir / "data"
    datadir.mkdir()
    run(
        [
            require_binary("mariadb-install-db", "package mariadb-server"),
            "--no-defaults",
            f"--datadir={datadir}",
            f"--user={_SERVER_USER}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *_SMALL,
        ],
        what="mariadb-install-db",
        timeout=120,
    )
    return on_free_port(lambda port: _launch(MariaDB(workdir=workdir, port=port), datadir))


def _launch(server: MariaDB, datadir: Path) -> MariaDB:
    server._proc = spawn(_server_argv(server, datadir), server.log_path)
    wait_or_stop(
        lambda: server.socket.exists() and port_open(server.port),
        server.stop,
        what=f"mariadbd on port {server.port}",
        timeout=_START_TIMEOUT,
        log=server.log_path,
        proc=server._proc,
    )
    return server


# The default 96 MB redo log would be most of each lab datadir.
_SMALL = ("--innodb-log-file-size=16M",)


def _server_argv(server: MariaDB, datadir: Path) -> list[str]:
    return [
        require_binary("mariadbd", "package mariadb-server"),
        "--no-defaults",
        f"--datadir={datadir}",
        f"--socket={server.socket}",
        f"--pid-file={server.workdir / 'mariadb.pid'}",
        f"--port={server.port}",
        "--bind-address=127.0.0.1",
        "--skip-networking=0",
        "--skip-name-resolve",
        f"--user={_SERVER_USER}",
        # A test database: small and fast beats durable.
        "--innodb-buffer-pool-size=64M",
        "--innodb-flush-log-at-trx-commit=0",
        "--skip-log-bin",
        *_SMALL,
        "--max-connections=200",
    ]


def _registered(password: str) -> str:
    leaks.register(password)
    return password
