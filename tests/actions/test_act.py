"""A site repository adopts forge in a few lines, proven with act.

The consumer workflows are ``examples/workflows`` as a site would copy them; only the
site's forge.yml points ``production`` at a test target (a local directory, or the
lab's real WordPress over SSH).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from lab import leaks

from .conftest import REPO, Site, TokenEndpoint

pytestmark = pytest.mark.e2e

# Random per run (a copy of this file in a test's tree is no leak) and registered
# with the suite's leak check, which then also reads act's logs and every file left.
FAKE_SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
                f"e2e-fake-ssh-key-body-{secrets.token_urlsafe(12)}\n"
                "-----END OPENSSH PRIVATE KEY-----\n")
DB_PASSWORD = f"e2e-db-password-{secrets.token_urlsafe(9)}"
EXTRA = f"e2e-extra-token-{secrets.token_urlsafe(9)}"
for _secret in (FAKE_SSH_KEY, DB_PASSWORD, EXTRA):
    leaks.register(_secret)


def _set_production(site: Site, env: dict[str, object]) -> None:
    path = site.root / "forge.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["environments"]["production"] = env
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _local_production(site: Site, target: Path, **extra: object) -> None:
    leaks.deploy_target(target)  # forge writes DB_PASSWORD into each release's .env
    _set_production(site, {
        "path": str(target), "keep_releases": 5, "shared": ["web/app/uploads"],
        "dotenv": {"WP_ENV": "production", "DB_NAME": "example", "DB_USER": "example",
                   "DB_PASSWORD": "${DB_PASSWORD}", "DB_HOST": "127.0.0.1"},
        **extra,
    })


def _secrets(**more: str) -> dict[str, str]:
    return {
        "FORGE_SSH_KEY": FAKE_SSH_KEY,
        "FORGE_KNOWN_HOSTS": "203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e\n",
        "FORGE_ENV": f"DB_PASSWORD={DB_PASSWORD}\nEXTRA_TOKEN={EXTRA}\n",
        **more,
    }


def _assert_no_secret_in(log: str, *values: str) -> None:
    for value in (DB_PASSWORD, EXTRA, *values):
        for line in value.splitlines():
            if len(line.strip()) >= 8 and "-----" not in line:
                assert line.strip() not in log, f"secret leaked into the log: {line[:6]}…"


def _live(target: Path) -> str:
    return os.readlink(target / "current").rsplit("/", 1)[-1]


def test_push_deploys_through_the_workflow_and_the_action(
        make_site: Callable[..., Site], tmp_path: Path) -> None:
    site = make_site()
    target = tmp_path / "target"
    _local_production(site, target)
    site.secrets = _secrets()
    site.use_example("deploy.yml")
    site.use_e2e("steps.yml")

    first = site.act("push", "deploy.yml")
    r1 = first.outputs["release-id"]
    assert r1 and first.outputs["previous-release-id"] == ""
    assert first.outputs["url"] == ""  # production has no url here
    assert _live(target) == r1

    (site.root / "web" / "app" / "themes" / "forge-example" / "version.txt").write_text("v2\n")
    second = site.act("push", "steps.yml")
    assert second.outputs == {"release-id": second.outputs["release-id"],
                              "previous-release-id": r1}
    r2 = second.outputs["release-id"]
    assert r2 != r1 and _live(target) == r2

    # The env secret reached forge (the site's .env), and no secret reached the log.
    dotenv = (target / "releases" / r2 / ".env").read_text()
    assert DB_PASSWORD in dotenv
    for run in (first, second):
        _assert_no_secret_in(run.log, FAKE_SSH_KEY)
        assert "forge-ci deploy: production" in run.log  # the job summary


def test_dispatch_rolls_back_to_the_chosen_release(
        make_site: Callable[..., Site], tmp_path: Path) -> None:
    site = make_site()
    target = tmp_path / "target"
    _local_production(site, target)
    site.secrets = _secrets()
    site.use_example("deploy.yml")
    site.use_example("rollback.yml")
    r1 = site.act("push", "deploy.yml").outputs["release-id"]
    (site.root / "web" / "app" / "themes" / "forge-example" / "version.txt").write_text("v2\n")
    r2 = site.act("push", "deploy.yml").outputs["release-id"]
    assert _live(target) == r2

    back = site.act("workflow_dispatch", "rollback.yml",
                    inputs={"environment": "production", "release": r1})
    assert back.outputs["release-id"] == r1
    assert back.outputs["previous-release-id"] == r2
    assert _live(target) == r1
    _assert_no_secret_in(back.log, FAKE_SSH_KEY)


def test_bad_dispatch_input_stops_before_forge_runs(
        make_site: Callable[..., Site], tmp_path: Path) -> None:
    site = make_site()
    _local_production(site, tmp_path / "target")
    site.secrets = _secrets()
    site.use_example("rollback.yml")
    run = site.act("workflow_dispatch", "rollback.yml", check=False,
                   inputs={"environment": "production", "release": "$(touch /tmp/pwned)"})
    assert run.returncode != 0
    assert "input 'release' is not a valid release id" in run.log
    assert "$ forge-ci" not in run.log and not (tmp_path / "target").exists()


def test_restore_without_matching_confirmation_touches_nothing(
        make_site: Callable[..., Site], tmp_path: Path) -> None:
    site = make_site()
    _local_production(site, tmp_path / "target")
    site.secrets = _secrets()
    site.use_e2e("restore-unconfirmed.yml")
    run = site.act("workflow_dispatch", "restore-unconfirmed.yml", check=False)
    assert run.returncode != 0
    assert "restore overwrites the live site" in run.log
    assert "$ forge-ci" not in run.log


def _keypair(tmp_path: Path) -> tuple[str, str]:
    ident = tmp_path / "backup-identity.txt"
    r = subprocess.run([str(REPO / ".venv" / "bin" / "forge-ci"), "keygen", "--json",
                        "--output", str(ident)], capture_output=True, text=True, check=True)
    recipient = yaml.safe_load(r.stdout)["recipient"]
    identity = ident.read_text().strip()
    leaks.register(next(x for x in identity.splitlines() if x.startswith("AGE-SECRET-KEY-")))
    leaks.holds_secrets(ident)
    # Made by forge, so registered only now: look at what keygen printed again.
    leaks.check(r.stdout + r.stderr, "output of forge-ci keygen --output")
    return identity, recipient


def _signing_pair(tmp_path: Path) -> tuple[str, str]:
    out = tmp_path / "backup-signing.key"
    r = subprocess.run([str(REPO / ".venv" / "bin" / "forge-ci"), "keygen", "--signing",
                        "--json", "--output", str(out)], capture_output=True, text=True,
                       check=True)
    key = next(x for x in out.read_text().splitlines() if not x.startswith("#"))
    leaks.register(key)
    leaks.holds_secrets(out)
    leaks.check(r.stdout + r.stderr, "output of forge-ci keygen --signing --output")
    return key, yaml.safe_load(r.stdout)["signer"]


def test_scheduled_backup_goes_to_s3_through_oidc_then_verifies_and_prunes(
        make_site: Callable[..., Site], tmp_path: Path, s3_server: object, s3_bucket: str,
        oidc_endpoint: TokenEndpoint) -> None:
    endpoint = s3_server.endpoint_url  # type: ignore[attr-defined]
    site = make_site()
    target = tmp_path / "target"
    uploads = target / "shared" / "web" / "app" / "uploads" / "2026" / "11"
    uploads.mkdir(parents=True)
    (uploads / "photo.jpg").write_bytes(os.urandom(40_000))
    identity, recipient = _keypair(tmp_path)
    signing_key, signer = _signing_pair(tmp_path)
    _local_production(site, target, backup={
        "store": f"s3://{s3_bucket}/example-site",
        "paths": ["shared/web/app/uploads"],
        "retention": {"keep_last": 2},
        "signers": [signer],  # verify and prune accept only what this key signed
    })
    site.secrets = _secrets(
        FORGE_BACKUP_RECIPIENT=recipient, FORGE_BACKUP_IDENTITY=identity,
        FORGE_BACKUP_SIGNING_KEY=signing_key,
        FORGE_ENV=f"DB_PASSWORD={DB_PASSWORD}\nAWS_ENDPOINT_URL={endpoint}\n")
    site.variables = {"FORGE_BACKUP_ROLE_ARN": "arn:aws:iam::123456789012:role/forge-backup"}
    site.env = {"ACTIONS_ID_TOKEN_REQUEST_URL": oidc_endpoint.url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": oidc_endpoint.bearer}
    site.use_example("backup.yml")

    run = site.act("schedule", "backup.yml")
    snapshot = run.outputs["snapshot-id"]
    assert snapshot, run.log[-4000:]
    # The job asked for an OIDC token for STS, and boto3 assumed the role with it.
    assert len(oidc_endpoint.seen) == 1 and "audience=sts.amazonaws.com" in oidc_endpoint.seen[0]
    for step in ("$ forge-ci backup production", "$ forge-ci verify production",
                 "$ forge-ci prune production"):
        assert step in run.log
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(  # type: ignore[attr-defined]
        Bucket=s3_bucket).get("Contents", [])]
    assert keys and all(k.startswith("example-site/") for k in keys)
    assert not any(b"photo" in k.encode() and k.endswith(".jpg") for k in keys)
    assert "not authenticated" not in run.log
    _assert_no_secret_in(run.log, identity, signing_key, oidc_endpoint.jwt,
                         oidc_endpoint.bearer)


def test_a_release_runs_with_its_own_tag_only(
        make_site: Callable[..., Site], tmp_path: Path, forge_tree: Path) -> None:
    """Same-commit pinning: a stamped release tree resolves no ref but v1 and its tag."""
    stamped = tmp_path / "forge-release"
    shutil.copytree(forge_tree, stamped)
    r = subprocess.run(["python3", str(stamped / "scripts" / "release"), "--stamp", "v1.0.0",
                        str(stamped)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for wf in (stamped / ".github" / "workflows").glob("*.yml"):
        assert "org/forge/actions/" not in wf.read_text() or "@main" not in wf.read_text()
    site = make_site()
    site.forge_tree = stamped
    site.refs = ("v1", "v1.0.0")  # no `main`: a stray @main would make act fail
    target = tmp_path / "target"
    _local_production(site, target)
    site.secrets = _secrets()
    site.use_example("deploy.yml")
    run = site.act("push", "deploy.yml")
    assert "with ref v1.0.0" in run.log and "with ref main" not in run.log
    assert _live(target) == run.outputs["release-id"]


@pytest.mark.usefixtures("forge_cache")
def test_deploy_and_rollback_over_ssh_to_the_lab_wordpress(
        make_site: Callable[..., Site], lab_dir: Path, wp_site: Callable[..., object],
        sshd_host: object) -> None:
    from tests.deploy.sshsite import SshSite

    ssh_site = SshSite.create(lab_dir, wp_site(), [sshd_host])  # type: ignore[list-item]
    site = make_site(ssh_site.src)
    # The lab has no Composer packages: this site commits WordPress core instead of
    # letting `composer install` fetch it at build time.
    ignore = site.root / ".gitignore"
    ignore.write_text(ignore.read_text().replace("/web/wp/\n", ""))
    site.secrets = {
        "FORGE_SSH_KEY": ssh_site.env["FORGE_SSH_KEY"],
        "FORGE_KNOWN_HOSTS": ssh_site.env["FORGE_KNOWN_HOSTS"],
        "FORGE_ENV": f"DB_PASSWORD={ssh_site.env['DB_PASSWORD']}\n",
    }
    site.use_example("deploy.yml")
    site.use_example("rollback.yml")
    first = site.act("push", "deploy.yml")
    assert ssh_site.serves("v1")
    assert first.outputs["url"] == ssh_site.site.url

    ssh_site.set_version("v2")
    version_file = next(ssh_site.src.rglob("version.txt")).relative_to(ssh_site.src)
    (site.root / version_file).write_text("v2\n")
    second = site.act("push", "deploy.yml")
    assert ssh_site.serves("v2")
    assert second.outputs["previous-release-id"] == first.outputs["release-id"]

    back = site.act("workflow_dispatch", "rollback.yml", inputs={"environment": "production"})
    assert ssh_site.serves("v1")
    assert back.outputs["release-id"] == first.outputs["release-id"]
    for run in (first, second, back):
        _assert_no_secret_in(run.log, ssh_site.env["FORGE_SSH_KEY"],
                             ssh_site.env["DB_PASSWORD"])
