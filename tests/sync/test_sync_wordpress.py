"""``forge-ci sync production staging`` between two real WordPress sites on the lab.

What a team checks after pulling production into staging: PHP reads every value,
staging's pages show staging's URL only, production did not change by a byte, real
customers' e-mails are gone, the undo snapshot puts staging back exactly, and a sync
that must not happen changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab import leaks
from lab.mariadb import MariaDB
from lab.site import WordPressSite
from lab.sshd import SshHost

from forge_ci.backup.format.keys import generate_identity
from forge_ci.deploy.lock import Lock, owner_info
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ExitCode
from forge_ci.remote.ssh import connector

from .wpsync import TwoSites

CUSTOMER_MAILS = ("jane@customer-mail.test", "bob@customer-mail.test",
                  "jane.buyer@customer-mail.test")


@pytest.fixture
def sites(lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost,
          mariadb_server: MariaDB) -> Iterator[TwoSites]:
    s = TwoSites.create(lab_dir, wp_site(), wp_site(), sshd_host, mariadb_server)
    s.seed()
    yield s
    s.close()


def _host_of(prod_url: str) -> str:
    return prod_url.split("//", 1)[1]


def test_production_to_staging(sites: TwoSites, capsys: pytest.CaptureFixture[str]) -> None:
    prod_db, staging_db = sites.prod.db, sites.staging.db
    t0 = 1_700_000_000
    sites.put_upload(sites.prod, "2026/01/new.txt", b"only in production", t0)
    sites.put_upload(sites.prod, "2026/01/same.txt", b"production copy", t0)
    sites.put_upload(sites.staging, "2026/01/same.txt", b"staging's copy!", t0)  # same size+mtime
    sites.put_upload(sites.prod, "2026/01/changed.txt", b"new and longer content", t0)
    sites.put_upload(sites.staging, "2026/01/changed.txt", b"old", t0)
    prod_before = sites.checksums(prod_db)
    staging_before = sites.checksums(staging_db)
    assert "wp_options" in " ".join(prod_before)

    # A dry run reports per table and column and writes nothing.
    assert sites.forge("sync", "production", "staging", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["database"]["changed"]["wp_options.option_value"] >= 5
    assert dry["database"]["changed"]["wp_posts.post_content"] >= 1
    assert "wp_posts.guid" not in dry["database"]["changed"]
    assert dry["uploads"]["changed"] == 2
    assert sites.checksums(staging_db) == staging_before

    assert sites.forge("sync", "production", "staging", "--json") == 0, sites.staging.logs()
    report = json.loads(capsys.readouterr().out)
    assert report["undo_command"].startswith("forge-ci sync-undo staging ")
    undo_id = report["undo_id"]

    # Transients cleared (before anything renders a page and makes new ones).
    assert sites.select(staging_db, "SELECT COUNT(*) FROM wp_options WHERE option_name "
                        "LIKE '%transient%'").strip() == "0"

    # PHP unserializes every serialized value of staging, each equal to PHP's own replace.
    verdict = sites.check()
    assert verdict["failures"] == [], verdict
    assert int(str(verdict["serialized"])) >= 8  # widgets, nested, builder meta, ...

    # Staging renders with staging's URL and nothing of production's.
    page = sites.page(sites.staging)
    assert "Synced post" in page and "Über uns" in page
    assert f"{sites.staging.url}/about" in page
    assert _host_of(sites.prod.url) not in page

    # guid kept; transients cleared; not indexed; real customers gone.
    guids = sites.select(staging_db, "SELECT guid FROM wp_posts WHERE post_title='Synced post'")
    assert _host_of(sites.prod.url) in guids
    assert sites.select(staging_db, "SELECT option_value FROM wp_options WHERE "
                        "option_name='blog_public'").strip() == "0"
    everything = "".join(sites.select(staging_db, f"SELECT CONCAT_WS(' ', {cols}) FROM {t}")
                         for t, cols in (("wp_users", "user_email, user_pass"),
                                         ("wp_comments", "comment_author_email"),
                                         ("wp_postmeta", "meta_value")))
    for mail in CUSTOMER_MAILS:
        assert mail not in everything
    assert "user-" in everything and "@example.invalid" in everything
    assert "+49 30 1234567" not in everything

    # Uploads: the new and the changed file travelled, the unchanged one did not.
    up = sites.uploads(sites.staging) / "2026/01"
    assert (up / "new.txt").read_bytes() == b"only in production"
    assert (up / "changed.txt").read_bytes() == b"new and longer content"
    assert (up / "same.txt").read_bytes() == b"staging's copy!"
    for release in (sites.staging.path / "releases").iterdir():  # still links to shared/
        assert (release / "web/app/uploads").is_symlink()

    # The after_sync hook ran in staging's live release.
    assert (sites.staging.path / ".forge/after-sync.txt").read_text().strip() == "production"

    # Production did not change by a byte.
    assert sites.checksums(prod_db) == prod_before

    # The undo snapshot restores staging exactly.
    assert sites.checksums(staging_db) != staging_before
    assert sites.forge("sync-undo", "staging", undo_id) == 0
    assert sites.checksums(staging_db) == staging_before


def test_refused_syncs_change_nothing(sites: TwoSites) -> None:
    prod_before = sites.checksums(sites.prod.db)
    staging_before = sites.checksums(sites.staging.db)

    # Into production without --confirm (production is protected by default).
    assert sites.forge("sync", "staging", "production") == ExitCode.FAILED
    # --confirm naming another environment.
    assert sites.forge("sync", "staging", "production", "--confirm", "staging") == ExitCode.USAGE
    # An unknown environment.
    assert sites.forge("sync", "production", "stagin") == ExitCode.USAGE
    # While a deploy holds staging's lock.
    host = connector(sites.env["FORGE_SSH_KEY"], sites.env["FORGE_KNOWN_HOSTS"])(
        sites.host.host, sites.host.port, sites.host.user)
    try:
        with Lock(host, Layout(str(sites.staging.path)), owner_info({}, "deploy")):
            assert sites.forge("sync", "production", "staging") == ExitCode.FAILED
    finally:
        host.close()

    assert sites.checksums(sites.prod.db) == prod_before
    assert sites.checksums(sites.staging.db) == staging_before
    assert not (sites.staging.path / ".forge/sync").exists()


def test_from_a_backup_snapshot_without_touching_production(
        sites: TwoSites, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    identity = generate_identity()
    leaks.register(identity.to_secret().reveal())
    db = sites.prod.db
    sites.configure(prod_extra=(
        f"    backup:\n      store: file://{lab_dir / 'store'}\n"
        f"      database: {{ name: {db.name}, user: {db.user}, "
        f"password: \"${{PROD_DB_PASSWORD}}\", host: {db.host}, port: {db.port} }}\n"))
    sites.env |= {"FORGE_BACKUP_RECIPIENT": str(identity.recipient),
                  "FORGE_BACKUP_IDENTITY": identity.to_secret().reveal()}
    sites.put_upload(sites.prod, "2026/02/in-snapshot.txt", b"backed up", 1_700_000_000)
    assert sites.forge("backup", "production") == 0
    capsys.readouterr()
    sites.put_upload(sites.prod, "2026/02/after-snapshot.txt", b"too late", 1_700_000_000)

    assert sites.forge("sync", "production", "staging", "--snapshot", "latest", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["snapshot"] and report["database"]["scrubbed_rows"]["wp_users"] >= 2
    verdict = sites.check()
    assert verdict["failures"] == [], verdict
    up = sites.uploads(sites.staging) / "2026/02"
    assert (up / "in-snapshot.txt").read_bytes() == b"backed up"
    assert not (up / "after-snapshot.txt").exists()
    assert _host_of(sites.prod.url) not in sites.page(sites.staging)
