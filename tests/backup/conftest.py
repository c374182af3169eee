"""A site to back up: a real MariaDB database with awkward rows, an uploads tree
with awkward names, and a forge.yml pointing at a local or SSH target and at a
file:// or moto S3 store. Commands run in-process through ``forge_ci.cli.main``
with an explicit environment, as CI would pass it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab import leaks
from lab.mariadb import Database, MariaDB
from lab.s3 import S3Server
from lab.sshd import SshHost
from lab.users import DEPLOY_USER

from forge_ci.backup.format.keys import X25519Identity, format_identity_file, generate_identity
from forge_ci.backup.signing import SigningKey
from forge_ci.cli import main

ROWS_SQL = r"""
SET NAMES utf8mb4;
CREATE TABLE posts (
  id INT PRIMARY KEY AUTO_INCREMENT,
  title TEXT NOT NULL,
  body LONGBLOB,
  created DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO posts (title, body, created) VALUES
  ('it''s "quoted" \\ back\\slash; -- not a comment', 0x00FF0A0D27225C1A00,
   '2024-01-02 03:04:05.123456'),
  ('ünïcödé ✓ 🎉 日本語', NULL, '1999-12-31 23:59:59.999999'),
  ('line one\nline two\r\n\ttabbed', '', '2038-01-19 03:14:08'),
  ('-- Dump completed', 0x2D2D2044756D7020636F6D706C65746564, NOW(6));
CREATE TABLE meta (k VARCHAR(64) PRIMARY KEY, v TEXT) DEFAULT CHARSET=latin1;
INSERT INTO meta VALUES ('café', 'crème brûlée');
CREATE VIEW titles AS SELECT id, title FROM posts;
CREATE TRIGGER posts_touch BEFORE UPDATE ON posts FOR EACH ROW SET NEW.created = NOW(6);
CREATE PROCEDURE count_posts() SELECT COUNT(*) FROM posts;
"""

# Everything about the data a restore must bring back, read as root.
CHECK_SQL = (
    "SELECT id, HEX(title), HEX(body), created FROM posts ORDER BY id;"
    "SELECT HEX(k), HEX(v) FROM meta;"
    "SHOW CREATE TABLE posts; SHOW CREATE TABLE meta; SHOW CREATE VIEW titles;"
    "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
    "WHERE TRIGGER_SCHEMA = DATABASE();"
    "SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
    "WHERE ROUTINE_SCHEMA = DATABASE();"
)

ODD_NAMES = ["a b.jpg", "-leading-dash.txt", "ünïcödé ✓.png", "new\nline.txt", "tab\there",
             "quote'\"$(x).txt", " space-first", "*glob?[x]"]


def as_user(db: Database, sql: str, server: MariaDB, database: str | None = None) -> str:
    """Run SQL as the database's own user (so it owns its routines and triggers)."""
    # Over TCP, as forge will connect: the definer of routines is then the same account.
    argv = ["mariadb", "--no-defaults", f"-u{db.user}", "-h", db.host, "-P", str(db.port),
            "--batch", "--skip-column-names"]
    done = subprocess.run([*argv, database or db.name], input=sql, capture_output=True,
                          text=True, env={**os.environ, "MYSQL_PWD": db.password}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def db_state(server: MariaDB, name: str) -> str:
    return server.sql(CHECK_SQL, name)


@dataclass
class Site:
    """One environment to back up and restore, and the way to run forge-ci on it."""

    root: Path
    config: Path
    db: Database
    server: MariaDB
    identity: X25519Identity
    identity_file: Path
    base_environ: dict[str, str]
    signing_key: SigningKey
    outputs: Path
    summary: Path
    environment: str = "production"
    owner: str | None = None
    sshd: SshHost | None = None
    last_json: Any = field(default=None, repr=False)
    last_err: str = field(default="", repr=False)

    @property
    def uploads(self) -> Path:
        return self.root / "shared" / "web" / "app" / "uploads"

    def environ(self, *, read: bool = True) -> dict[str, str]:
        """CI's view: the backup job gets only the recipient and the signing key;
        restore/verify the identity too."""
        environ = dict(self.base_environ, FORGE_BACKUP_RECIPIENT=str(self.identity.recipient),
                       FORGE_BACKUP_SIGNING_KEY=self.signing_key.to_secret().reveal())
        if read:
            environ["FORGE_BACKUP_IDENTITY"] = self.identity.to_secret().reveal()
        return environ

    def run(self, *argv: str, read: bool = True, environ: dict[str, str] | None = None,
            capsys: pytest.CaptureFixture[str] | None = None) -> int:
        args = [argv[0], "--config", str(self.config), *argv[1:]]
        if capsys is not None:
            capsys.readouterr()  # drop what earlier commands printed
        rc = main(args, environ or self.environ(read=read))
        if capsys is not None:
            out, self.last_err = capsys.readouterr()
            self.last_json = json.loads(out) if "--json" in argv and out.strip() else out
        return rc

    def json(self, capsys: pytest.CaptureFixture[str], *argv: str, read: bool = True) -> Any:
        rc = self.run(*argv, "--json", read=read, capsys=capsys)
        assert rc == 0, f"forge-ci {' '.join(argv)} exited {rc}: {self.last_err}"
        return self.last_json

    def chown(self) -> None:
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            for dirpath, dirs, files in os.walk(self.root):
                os.lchown(dirpath, entry.pw_uid, entry.pw_gid)
                for name in dirs + files:
                    os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def fill_uploads(uploads: Path, *, big: int = 3_000_000) -> None:
    """Awkward names, modes, mtimes, an empty file, a link, many small files, one big one."""
    uploads.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(ODD_NAMES):
        (uploads / name).write_bytes(f"{name} {i}\n".encode())
    (uploads / os.fsdecode(b"latin1-\xe9.txt")).write_bytes(b"not utf-8 name\n")
    (uploads / "empty").write_bytes(b"")
    (uploads / "dup-1.txt").write_bytes(b"same content\n")
    (uploads / "dup-2.txt").write_bytes(b"same content\n")
    private = uploads / "2024" / "01"
    private.mkdir(parents=True)
    for i in range(20):
        (private / f"img-{i:02d}.jpg").write_bytes(os.urandom(1000 + i * 997))
    (private / "big.bin").write_bytes(os.urandom(big))
    (private / "secret.txt").write_text("mode 0600\n")
    (private / "secret.txt").chmod(0o600)
    (uploads / "2024").chmod(0o750)
    (uploads / "empty-dir").mkdir()
    (uploads / "latest").symlink_to("2024/01")
    os.utime(private / "secret.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Path -> (type, mode, mtime_ns, content or link target) for comparisons."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, st.st_mtime_ns)
            else:
                out[rel] = ("file", st.st_mode & 0o7777, st.st_mtime_ns, p.read_bytes())
    return out


def _config(site_root: Path, store: str, db: Database, *, hosts: str = "",
            retention: str = "{ keep_last: 3 }", signers: tuple[str, ...] = ()) -> str:
    return (
        "version: 1\nproject: backup-lab\nenvironments:\n  production:\n"
        + (f"    hosts: {hosts}\n" if hosts else "")
        + f"    path: {site_root}\n"
        "    backup:\n"
        f"      store: {store}\n"
        f"      database: {{ name: {db.name}, user: {db.user}, password: \"${{DB_PASSWORD}}\","
        f" host: 127.0.0.1, port: {db.port} }}\n"
        f"      retention: {retention}\n"
        + (f"      signers: [{', '.join(json.dumps(s) for s in signers)}]\n" if signers else "")
    )


def new_site(server: MariaDB, lab_dir: Path, *, s3: S3Server | None = None,
             sshd: SshHost | None = None, retention: str = "{ keep_last: 3 }",
             big: int = 3_000_000) -> Site:
    """A database with awkward rows and an uploads tree under ``lab_dir``, backed up to
    a bucket of ``s3`` (else a file:// store in ``lab_dir``), through ``sshd`` if given."""
    db = server.create_database("bk")
    as_user(db, ROWS_SQL, server)
    root = lab_dir / "site"
    fill_uploads(root / "shared" / "web" / "app" / "uploads", big=big)
    environ = {"PATH": os.environ["PATH"], "DB_PASSWORD": db.password,
           "GITHUB_OUTPUT": str(lab_dir / "outputs"),
           "GITHUB_STEP_SUMMARY": str(lab_dir / "summary.md")}
    if s3 is not None:
        url = f"s3://{s3.create_bucket()}/forge/backups"
        environ |= s3.env()
    else:
        url = f"file://{lab_dir / 'store'}"
    hosts, owner = "", None
    if sshd is not None:
        hosts = f"[{{ host: {sshd.host}, port: {sshd.port}, user: {sshd.user} }}]"
        environ |= {"FORGE_SSH_KEY": sshd.private_key, "FORGE_KNOWN_HOSTS": sshd.known_hosts}
        owner = DEPLOY_USER
    signing_key = SigningKey.generate()
    leaks.register(signing_key.to_secret().reveal())
    config = lab_dir / "forge.yml"
    config.write_text(_config(root, url, db, hosts=hosts, retention=retention,
                              signers=(str(signing_key.public),)))
    identity = generate_identity()
    leaks.register(identity.to_secret().reveal())
    identity_file = leaks.holds_secrets(lab_dir / "identity.txt")
    fd = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(format_identity_file(identity).reveal())
    site = Site(root=root, config=config, db=db, server=server, identity=identity,
                identity_file=identity_file, base_environ=environ, signing_key=signing_key,
                outputs=lab_dir / "outputs",
                summary=lab_dir / "summary.md", owner=owner, sshd=sshd)
    site.chown()
    return site


def drop_site(site: Site) -> None:
    site.server.drop_database(site.db)
    shutil.rmtree(site.root, ignore_errors=True)


@pytest.fixture
def make_site(mariadb_server: MariaDB, lab_dir: Path,
              request: pytest.FixtureRequest) -> Iterator[Callable[..., Site]]:
    """Factory: ``make_site(store="file" | "s3", ssh=False, retention=...)``."""
    made: list[Site] = []

    def make(*, store: str = "file", ssh: bool = False,
             retention: str = "{ keep_last: 3 }", big: int = 3_000_000) -> Site:
        s3 = request.getfixturevalue("s3_server") if store == "s3" else None
        sshd = request.getfixturevalue("sshd_host") if ssh else None
        made.append(new_site(mariadb_server, lab_dir, s3=s3, sshd=sshd, retention=retention,
                             big=big))
        return made[-1]

    yield make
    for site in made:
        drop_site(site)


def reference_decrypt(identity_file: Path, blob: bytes) -> bytes:
    """``age -d -i KEY | zstd -d``: the restore recipe that needs no forge."""
    age = subprocess.run(["age", "-d", "-i", str(identity_file)], input=blob,
                         capture_output=True, timeout=60)
    assert age.returncode == 0, age.stderr.decode()
    zstd = subprocess.run(["zstd", "-d", "-c"], input=age.stdout, capture_output=True,
                          timeout=60)
    assert zstd.returncode == 0, zstd.stderr.decode()
    return zstd.stdout
