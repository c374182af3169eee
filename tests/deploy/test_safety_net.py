"""The safety net on real WordPress over SSH with MariaDB: a database snapshot with each
deploy, a migration that changes the schema, ``rollback --with-database`` bringing the
old schema and rows back with the old code; the maintenance file never outliving a
run killed mid-migration; a snapshot that cannot be stored stopping the deploy before
anything is switched."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from lab import leaks
from lab.killable import Run
from lab.mariadb import MariaDB
from lab.site import WordPressSite
from lab.sshd import SshHost

from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.signing import SigningKey
from forge_ci.errors import ExitCode
from tests.deploy.sshsite import SshSite

pytestmark = [pytest.mark.lab]

SCHEMA_SQL = """\
ALTER TABLE wp_posts ADD COLUMN forge_revision INT NOT NULL DEFAULT 2;
UPDATE wp_posts SET post_title = CONCAT('v2: ', post_title);
"""


class Net:
    """An SshSite with a backup store, signing keys and a database option file the
    migration hook reads (as a server keeps its credentials out of the repository)."""

    def __init__(self, site: SshSite, mariadb: MariaDB, lab_dir: Path, store: str) -> None:
        self.ssh, self.mariadb, self.lab_dir, self.store = site, mariadb, lab_dir, store
        key, identity = SigningKey.generate(), generate_identity()
        for secret in (key.to_secret().reveal(), identity.to_secret().reveal()):
            leaks.register(secret)
        self.signer = str(key.public)
        site.env |= {"FORGE_BACKUP_RECIPIENT": str(identity.recipient),
                     "FORGE_BACKUP_SIGNING_KEY": key.to_secret().reveal(),
                     "FORGE_BACKUP_IDENTITY": identity.to_secret().reveal()}
        db = site.site.db
        self.cnf = leaks.holds_secrets(lab_dir / "migrate.cnf")
        self.cnf.write_text(f"[client]\nuser={db.user}\npassword={db.password}\n"
                            f"host={db.host}\nport={db.port}\ndatabase={db.name}\n")
        os.chown(self.cnf, pwd.getpwnam(site.site.user).pw_uid, -1)
        self.cnf.chmod(0o600)
        self.runs = 0
        self.snapshot: str | None = None  # what the last deploy --json said it took

    def configure(self, *, snapshot: bool = True, hooks: str = "") -> None:
        db = self.ssh.site.db
        self.ssh.configure(
            "    backup:\n"
            f"      store: {self.store}\n"
            f"      database: {{ name: {db.name}, user: {db.user}, password: \"${{DB_PASSWORD}}\","
            f" host: 127.0.0.1, port: {db.port} }}\n"
            f"      signers: [{json.dumps(self.signer)}]\n"
            f"      before_deploy: {'true' if snapshot else 'false'}\n"
            + (f"    hooks:\n{hooks}" if hooks else ""))

    def migrate_hooks(self, command: str, *, maintenance: bool = True) -> str:
        return (f"      migrate: [{json.dumps(command)}]\n"
                f"      maintenance: {'true' if maintenance else 'false'}\n")

    def forge(self, *args: str) -> tuple[int, Any]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = self.ssh.forge(*args)
        return rc, (json.loads(out.getvalue()) if "--json" in args and rc == 0 else None)

    def deploy(self, version: str) -> str:
        self.ssh.set_version(version)
        rc, out = self.forge("deploy", "production", "--json")
        assert rc == 0, self.ssh.site.logs()
        assert self.ssh.serves(version)
        self.snapshot = out["snapshot"]
        return str(out["release"])

    def releases(self) -> dict[str, dict[str, Any]]:
        rc, out = self.forge("releases", "production", "--json")
        assert rc == 0
        return {r["id"]: r for r in out["releases"]}

    def schema(self) -> tuple[bool, list[str]]:
        """(the migration's column exists, every post title)."""
        name = self.ssh.site.db.name
        column = self.mariadb.sql("SHOW COLUMNS FROM wp_posts LIKE 'forge_revision';", name)
        titles = self.mariadb.sql("SELECT post_title FROM wp_posts ORDER BY ID;", name)
        return bool(column.strip()), titles.splitlines()

    @property
    def current(self) -> str:
        return os.readlink(self.ssh.site.path / "current").removeprefix("releases/")

    def maintenance_files(self) -> list[Path]:
        return sorted((self.ssh.site.path / "releases").glob("*/web/wp/.maintenance"))

    def status(self) -> int:
        return requests.get(self.ssh.site.url + "/", timeout=10,
                            allow_redirects=False).status_code

    def spawn(self, *args: str) -> Run:
        self.runs += 1
        return Run([*args, "--config", str(self.ssh.src / "forge.yml")], self.ssh.env,
                   self.lab_dir / f"run-{self.runs}.out")


@pytest.fixture
def net(lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost,
        mariadb_server: MariaDB) -> Net:
    site = SshSite.create(lab_dir, wp_site(), [sshd_host])
    return Net(site, mariadb_server, lab_dir, f"file://{lab_dir / 'store'}")


def test_rollback_with_database_brings_back_the_old_schema_and_rows_with_the_old_code(
        net: Net) -> None:
    net.configure()
    v1 = net.deploy("v1")
    before = net.schema()
    assert before[0] is False and before[1]
    # The release carries its snapshot: an ordinary, signed snapshot of the store.
    snap1 = net.releases()[v1]["snapshot"]
    assert snap1 and snap1 == net.snapshot
    rc = net.ssh.forge("snapshots", "production")
    assert rc == 0

    # v2 ships a migration that changes the schema and the rows; it runs before the
    # switch, in the new release's directory, with the FORGE_* variables.
    (net.ssh.src / "migrations").mkdir()
    (net.ssh.src / "migrations/002.sql").write_text(SCHEMA_SQL)
    net.configure(hooks=net.migrate_hooks(
        f'test "$FORGE_RELEASE_PATH" = "$PWD" && mariadb --defaults-extra-file={net.cnf}'
        " --batch < migrations/002.sql"))
    v2 = net.deploy("v2")
    after = net.schema()
    assert after[0] is True
    assert after[1] == [f"v2: {t}" for t in before[1]]
    releases = net.releases()
    assert releases[v2]["snapshot"] and releases[v2]["snapshot"] != snap1
    assert net.maintenance_files() == []

    # The plan names the restore; without confirmation nothing happens.
    rc, plan = net.forge("rollback", "production", "--with-database", "--dry-run", "--json")
    assert rc == 0
    assert plan["target"] == v1
    assert plan["hosts"][0]["database"] == [
        {"op": "restore_database", "snapshot": snap1, "release": v1}]
    rc, _ = net.forge("rollback", "production", "--with-database")
    assert rc == ExitCode.USAGE
    assert net.current == v2 and net.schema() == after

    rc, _ = net.forge("rollback", "production", "--with-database", "--yes")
    assert rc == 0, net.ssh.site.logs()
    assert net.current == v1
    assert net.ssh.serves("v1")
    assert net.schema() == before


def test_the_maintenance_file_never_outlives_a_run_killed_mid_migration(net: Net) -> None:
    net.configure(snapshot=False)
    net.deploy("v1")
    v2 = net.deploy("v2")
    net.configure(snapshot=False, hooks=net.migrate_hooks("sleep 60"))

    # Killed while the migration runs: the live release (v2) shows the maintenance page.
    net.ssh.set_version("v3")
    run = net.spawn("deploy", "production")
    run.wait_for("migrate[0]: sleep 60")
    assert [p.parts[-4] for p in net.maintenance_files()] == [v2]
    assert net.status() == 503
    run.kill()
    assert net.status() == 503  # nothing removed it: the next run must

    # The next run (here a rollback) removes it first, then does its work.
    net.configure(snapshot=False)
    rc, _ = net.forge("rollback", "production")
    assert rc == 0
    assert net.maintenance_files() == []
    assert net.ssh.serves("v1") and net.status() == 200

    # Killed again; this time the next deploy cleans up.
    net.configure(snapshot=False, hooks=net.migrate_hooks("sleep 60"))
    net.ssh.set_version("v4")
    run = net.spawn("deploy", "production")
    run.wait_for("migrate[0]: sleep 60")
    assert net.status() == 503
    run.kill()
    net.configure(snapshot=False)
    net.deploy("v5")
    assert net.maintenance_files() == []
    assert net.status() == 200
    assert not (net.ssh.site.path / ".forge/maintenance").exists()


def test_a_snapshot_that_cannot_be_stored_fails_the_deploy_before_any_switch(
        net: Net, lab_dir: Path) -> None:
    net.configure(snapshot=False)
    v1 = net.deploy("v1")
    (lab_dir / "not-a-directory").write_text("a file where the store should be\n")
    net.store = f"file://{lab_dir / 'not-a-directory' / 'store'}"
    net.configure()
    net.ssh.set_version("v2")
    rc, _ = net.forge("deploy", "production")
    assert rc == ExitCode.FAILED
    assert net.current == v1 and net.ssh.serves("v1")
    # The release that never went live is marked bad and removed.
    states = {rid: r["state"] for rid, r in net.releases().items()}
    assert states[v1] == "live"
    assert all(s == "bad" for rid, s in states.items() if rid != v1)
    assert sorted(os.listdir(net.ssh.site.path / "releases")) == [v1] or all(
        d.startswith(".") or d == v1 for d in os.listdir(net.ssh.site.path / "releases"))


def test_a_failed_migration_takes_the_maintenance_page_down_with_it(net: Net) -> None:
    net.configure(snapshot=False)
    v1 = net.deploy("v1")
    # Before the switch: the live release shows the page while the hook runs; the hook
    # fails, the deploy fails (exit 1), nothing is switched, the page is gone.
    live = net.ssh.site.path / "releases" / v1 / "web/wp/.maintenance"
    net.configure(snapshot=False, hooks=net.migrate_hooks(f"test -f {live} && exit 3"))
    net.ssh.set_version("v2")
    rc, _ = net.forge("deploy", "production")
    assert rc == ExitCode.FAILED
    assert net.current == v1 and net.maintenance_files() == [] and net.status() == 200

    # After the switch: the new release is in maintenance while the hook runs in it;
    # a failure rolls the code back (exit 3), and the page is gone there too.
    net.configure(snapshot=False, hooks=net.migrate_hooks("test -f web/wp/.maintenance")
                  + "      migrate_at: after_switch\n")
    v3 = net.deploy("v3")
    assert net.current == v3 and net.maintenance_files() == []
    net.configure(snapshot=False, hooks=net.migrate_hooks("test -f web/wp/.maintenance && false")
                  + "      migrate_at: after_switch\n")
    net.ssh.set_version("v4")
    rc, _ = net.forge("deploy", "production")
    assert rc == ExitCode.ROLLED_BACK
    assert net.current == v3 and net.ssh.serves("v3")
    assert net.maintenance_files() == [] and net.status() == 200
