"""`notify:` in forge.yml, end to end: forge-ci deploy on the local target tells a real
webhook receiver and a real SMTP server (STARTTLS) what happened, with the run's
environment, release, commit, actor and URL; a receiver that fails or hangs warns
and never changes the deploy's exit code; no secret reaches any message."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from email import message_from_bytes
from typing import Any

import pytest

from forge_ci.errors import DeployFailed, ExitCode, RollbackFailed, RolledBack
from forge_ci.notify.hooks import event_for
from tests.deploy.conftest import LocalSite, local_site  # noqa: F401 (fixture)

from .conftest import Mailbox, Receiver, Secrets, TlsFiles, assert_no_secret

RUN = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_RUN_ID": "777",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
}


def configure(site: LocalSite, notify: str, *, top_level: bool = True) -> None:
    """forge.yml with ``notify`` at the top level (or inside the environment)."""
    if top_level:
        site.config()
        path = site.src / "forge.yml"
        path.write_text(path.read_text() + "notify:\n" + notify)
    else:
        site.config(extra="    notify:\n" + "".join("  " + line + "\n"
                                                    for line in notify.splitlines()))


def webhook(rec: Receiver, secrets: Secrets, events: str = "") -> str:
    return (f"  - {{type: webhook, url: '{rec.url('/forge')}', secret: '${{HOOK_SECRET}}'"
            + (f", events: [{events}]" if events else "") + "}\n")


def bodies(rec: Receiver, secrets: Secrets) -> list[dict[str, Any]]:
    out = []
    for req in rec.requests:
        stamp = req.headers["X-Forge-Timestamp"]
        mac = hmac.new(secrets.hook_secret.encode(), stamp.encode() + b"." + req.body,
                       hashlib.sha256).hexdigest()
        assert req.headers["X-Forge-Signature"] == "sha256=" + mac
        assert_no_secret(req.body.decode(), secrets)
        out.append(json.loads(req.body))
    return out


@pytest.fixture
def site(local_site: LocalSite, notify_secrets: Secrets) -> LocalSite:  # noqa: F811
    local_site.env |= RUN | {"HOOK_SECRET": notify_secrets.hook_secret,
                             "SMTP_USER": notify_secrets.smtp_user,
                             "SMTP_PASSWORD": notify_secrets.smtp_password,
                             "FORGE_NOTIFY_ATTEMPTS": "2", "FORGE_NOTIFY_TIMEOUT": "1"}
    return local_site


def test_a_good_deploy_tells_the_webhook_and_the_mailbox(
        site: LocalSite, notify_secrets: Secrets, receiver: Callable[..., Receiver],
        smtp_server: Callable[..., Mailbox], tls_files: TlsFiles,
        capsys: pytest.CaptureFixture[str]) -> None:
    rec = receiver()
    box = smtp_server("starttls")
    site.env["SSL_CERT_FILE"] = str(tls_files.ca)
    configure(site, webhook(rec, notify_secrets)
              + f"  - {{type: email, smtp: 'smtp://127.0.0.1:{box.port}', "
                "from: forge@example.com, to: [ops@example.com], "
                "user: '${SMTP_USER}', password: '${SMTP_PASSWORD}'}\n")
    assert site.forge("deploy", "local") == 0
    (event,) = bodies(rec, notify_secrets)
    assert event["event"] == "deploy.succeeded" and event["severity"] == "info"
    assert event["environment"] == "local" and event["project"] == "t"
    assert event["release"] == site.current
    assert event["commit"] == RUN["GITHUB_SHA"] and event["actor"] == "octocat"
    assert event["run_url"] == "https://github.com/acme/shop/actions/runs/777"
    assert event["details"]["seconds"] >= 0 and event["details"]["sent_entries"] >= 1
    (mail,) = box.messages
    text = message_from_bytes(mail.content if isinstance(mail.content, bytes)
                              else mail.content.encode())
    assert text["Subject"].startswith("[local] deploy.succeeded: release " + site.current)
    body = text.get_payload(decode=True).decode()
    assert f"Release: {site.current}" in body and "Run: https://github.com/acme/shop" in body
    assert_no_secret(body + capsys.readouterr().out, notify_secrets)


def test_a_deploy_records_its_metrics_for_releases_and_the_summary(
        site: LocalSite, capsys: pytest.CaptureFixture[str]) -> None:
    summary = site.src.parent / "summary.md"
    site.env["GITHUB_STEP_SUMMARY"] = str(summary)
    assert site.forge("deploy", "local") == 0
    capsys.readouterr()
    assert site.forge("releases", "local", "--json") == 0
    (live,) = json.loads(capsys.readouterr().out)["releases"]
    metrics = live["metrics"]
    assert {"lock_and_observe_s", "prepare_s", "preview_s", "switch_and_check_s",
            "sent_entries", "sent_bytes"} <= set(metrics)
    assert metrics["sent_bytes"] > 0 and metrics["switch_and_check_s"] > 0
    assert "| prepare_s |" in summary.read_text() and "| sent_bytes |" in summary.read_text()


def test_a_rolled_back_deploy_says_so_and_the_environment_may_override(
        site: LocalSite, notify_secrets: Secrets,
        receiver: Callable[..., Receiver]) -> None:
    quiet, rec = receiver(), receiver()
    configure(site, webhook(quiet, notify_secrets))  # top level: this env overrides it
    path = site.src / "forge.yml"
    text = path.read_text()
    site.config(extra="    notify:\n  " + webhook(rec, notify_secrets, "deploy"))
    path.write_text(path.read_text() + text[text.index("notify:"):])
    assert site.forge("deploy", "local") == 0
    good = site.current
    site.write("web/index.html", "error 500\n")
    assert site.forge("deploy", "local") == ExitCode.ROLLED_BACK
    first, second = bodies(rec, notify_secrets)
    assert first["event"] == "deploy.succeeded" and first["release"] == good
    assert second["event"] == "deploy.rolled_back" and second["severity"] == "error"
    assert "rolled back" in second["summary"] and second["commit"] == RUN["GITHUB_SHA"]
    assert quiet.requests == []


@pytest.mark.parametrize("kind", ["500", "hang"])
def test_a_failing_receiver_warns_and_the_deploy_still_succeeds(
        site: LocalSite, notify_secrets: Secrets, receiver: Callable[..., Receiver],
        capsys: pytest.CaptureFixture[str], kind: str) -> None:
    rec = receiver(500) if kind == "500" else receiver(hang=True)
    configure(site, webhook(rec, notify_secrets), top_level=False)
    assert site.forge("deploy", "local") == 0
    assert len(rec.requests) == 2  # retried once (FORGE_NOTIFY_ATTEMPTS=2)
    out = capsys.readouterr()
    shown = out.out + out.err
    assert "notification deploy.succeeded to notify[0] (webhook, 127.0.0.1) not delivered " \
           "after 2 attempts" in shown
    assert_no_secret(shown, notify_secrets)


def test_a_rollback_asked_for_is_its_own_event(
        site: LocalSite, notify_secrets: Secrets, receiver: Callable[..., Receiver]) -> None:
    rec = receiver()
    configure(site, webhook(rec, notify_secrets, "rollback"))
    assert site.forge("deploy", "local") == 0
    first = site.current
    site.write("web/index.html", "ok v2\n")
    assert site.forge("deploy", "local") == 0
    second = site.current
    assert site.forge("rollback", "local") == 0
    (event,) = bodies(rec, notify_secrets)  # `events: [rollback]`: deploys filtered out
    assert event["event"] == "rollback.succeeded" and event["severity"] == "warning"
    assert (event["release"], event["previous_release"]) == (first, second)


@pytest.mark.parametrize(("command", "error", "name"), [
    ("deploy", None, "deploy.succeeded"),
    ("deploy", DeployFailed("x"), "deploy.failed"),
    ("deploy", RolledBack("x"), "deploy.rolled_back"),
    ("deploy", RollbackFailed("x"), "rollback.failed"),
    ("rollback", None, "rollback.succeeded"),
    ("rollback", DeployFailed("x"), "rollback.failed"),
    ("backup", None, "backup.succeeded"),
    ("backup", RuntimeError("bug"), "backup.failed"),
    ("verify", None, None),
    ("verify", DeployFailed("x"), "verify.failed"),
    ("drill", DeployFailed("x"), "drill.failed"),
    ("releases", None, None),
    ("monitor", None, None),  # the monitor tells about changes of state itself
])
def test_which_event_a_verb_makes(command: str, error: Exception | None,
                                  name: str | None) -> None:
    assert event_for(command, error) == name
