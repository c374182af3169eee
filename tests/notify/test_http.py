"""Slack, Discord, Teams and the signed webhook against a real HTTP receiver on
127.0.0.1: what arrives carries environment, release, commit, actor and the run's
URL; the signature verifies the way the module docstring tells a receiver to; a
receiver that fails, hangs or is not there is retried, then warned about, and the
caller goes on; no secret in anything a person reads."""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from forge_ci.notify import Dispatcher, Event, RetryPolicy, build_notifiers, parse_targets
from forge_ci.notify import http as notify_http

from .conftest import Receiver, Secrets, assert_no_secret, free_port

ENVIRON = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_RUN_ID": "4242",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
}
RUN_URL = "https://github.com/acme/shop/actions/runs/4242"


def deploy_failed() -> Event:
    return Event.create(
        "deploy.failed", environment="production", project="shop",
        summary="health check failed on web1: HTTP 502", environ=ENVIRON,
        release="20261206-101500", previous_release="20261205-090000",
        details={"ship_s": 12.5, "hosts": 2},
    )


def dispatch(raw: list[dict[str, Any]], policy: RetryPolicy,
             event: Event | None = None) -> tuple[list[str], Any]:
    warnings: list[str] = []
    with requests.Session() as session:
        routes = build_notifiers(parse_targets(raw), session=session)
        outcomes = Dispatcher(routes, policy, warnings.append).notify(event or deploy_failed())
    return warnings, outcomes


def only_request(rec: Receiver) -> tuple[str, dict[str, Any]]:
    assert len(rec.requests) == 1
    got = rec.requests[0]
    assert got.headers["Content-Type"] == "application/json"
    return got.path, json.loads(got.body)


def test_slack_gets_text_and_blocks(receiver: Callable[..., Receiver], policy: RetryPolicy,
                                    notify_secrets: Secrets) -> None:
    rec = receiver()
    warnings, outcomes = dispatch(
        [{"type": "slack", "url": rec.url(notify_secrets.slack_path)}], policy)
    path, body = only_request(rec)
    assert path == notify_secrets.slack_path
    assert body["text"] == "[production] deploy.failed: health check failed on web1: HTTP 502"
    text = json.dumps(body["blocks"])
    for fact in ("production", "20261206-101500", "20261205-090000", ENVIRON["GITHUB_SHA"],
                 "octocat", f"<{RUN_URL}|Open the workflow run>"):
        assert fact in text
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    assert warnings == [] and outcomes[0].delivered and outcomes[0].attempts == 1
    assert outcomes[0].target == "notify[0] (slack, 127.0.0.1)"


def test_discord_gets_content_and_an_embed(receiver: Callable[..., Receiver],
                                           policy: RetryPolicy,
                                           notify_secrets: Secrets) -> None:
    rec = receiver(204)  # Discord answers 204 No Content
    warnings, outcomes = dispatch(
        [{"type": "discord", "url": rec.url(notify_secrets.discord_path)}], policy)
    _, body = only_request(rec)
    (embed,) = body["embeds"]
    assert embed["title"] == "production: deploy.failed"
    assert embed["url"] == RUN_URL
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Release"] == "20261206-101500"
    assert fields["Commit"] == ENVIRON["GITHUB_SHA"]
    assert fields["Actor"] == "octocat"
    assert fields["Environment"] == "production"
    assert body["allowed_mentions"] == {"parse": []}
    assert warnings == [] and outcomes[0].delivered


def test_teams_gets_an_adaptive_card(receiver: Callable[..., Receiver], policy: RetryPolicy,
                                     notify_secrets: Secrets) -> None:
    rec = receiver(202)  # a Workflows trigger answers 202 Accepted
    warnings, outcomes = dispatch(
        [{"type": "teams", "url": rec.url(notify_secrets.teams_path)}], policy)
    _, body = only_request(rec)
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet"
             for f in b["facts"]}
    assert facts["Environment"] == "production"
    assert facts["Release"] == "20261206-101500"
    assert facts["Commit"] == ENVIRON["GITHUB_SHA"]
    assert facts["Actor"] == "octocat"
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the workflow run",
                                "url": RUN_URL}]
    assert warnings == [] and outcomes[0].delivered


def receiver_verify() -> Callable[..., bool]:
    """The receiver's check exactly as the module docstring prints it."""
    doc = notify_http.__doc__ or ""
    snippet = re.search(r"replayed later::\n\n((?:    .*\n|\n)+)", doc)
    assert snippet, "the docstring lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(snippet.group(1)), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


def test_webhook_body_is_the_event_and_the_signature_verifies(
        receiver: Callable[..., Receiver], policy: RetryPolicy,
        notify_secrets: Secrets) -> None:
    rec = receiver()
    warnings, _ = dispatch([{"type": "webhook", "url": rec.url("/forge"),
                             "secret": notify_secrets.hook_secret}], policy)
    assert warnings == []
    got = rec.requests[0]
    body = json.loads(got.body)
    assert body == deploy_failed().to_dict() | {"time": body["time"]}
    assert body["run_url"] == RUN_URL and body["commit"] == ENVIRON["GITHUB_SHA"]
    assert got.headers["X-Forge-Event"] == "deploy.failed"
    assert abs(int(got.headers["X-Forge-Timestamp"]) - time.time()) < 60

    verify = receiver_verify()
    secret = notify_secrets.hook_secret.encode()
    assert verify(secret, got.headers, got.body)
    assert not verify(b"another secret of enough length", got.headers, got.body)
    assert not verify(secret, got.headers, got.body.replace(b"production", b"productiom"))
    old = {**got.headers, "X-Forge-Timestamp": str(int(time.time()) - 3600)}
    assert not verify(secret, old, got.body)  # and a signature cannot be moved to a new time


def test_events_filter_picks_targets(receiver: Callable[..., Receiver], policy: RetryPolicy,
                                     notify_secrets: Secrets) -> None:
    deploys, monitors, everything = receiver(), receiver(), receiver()
    raw: list[dict[str, Any]] = [
        {"type": "slack", "url": deploys.url("/d"), "events": ["deploy.failed"]},
        {"type": "slack", "url": monitors.url("/m"), "events": ["monitor", "backup.failed"]},
        {"type": "webhook", "url": everything.url("/all"), "secret": notify_secrets.hook_secret},
    ]
    dispatch(raw, policy)
    dispatch(raw, policy, Event.create("monitor.recovered", environment="production",
                                       summary="site answers again", environ=ENVIRON))
    dispatch(raw, policy, Event.create("backup.succeeded", environment="production",
                                       summary="snapshot 3f2a stored", environ=ENVIRON))
    assert [r.headers["X-Forge-Event"] for r in everything.requests] == [
        "deploy.failed", "monitor.recovered", "backup.succeeded"]
    assert len(deploys.requests) == 1 and "deploy.failed" in deploys.requests[0].body.decode()
    assert len(monitors.requests) == 1
    assert "monitor.recovered" in monitors.requests[0].body.decode()


def test_a_500_is_retried_then_warned_and_the_caller_goes_on(
        receiver: Callable[..., Receiver], notify_secrets: Secrets) -> None:
    broken, fine = receiver(500), receiver()
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, backoff=0.5, timeout=1.0, sleep=sleeps.append)
    warnings, outcomes = dispatch([
        {"type": "slack", "url": broken.url(notify_secrets.slack_path)},
        {"type": "discord", "url": fine.url(notify_secrets.discord_path)},
    ], policy)
    assert len(broken.requests) == 3
    assert sleeps == [0.5, 1.0]  # backoff doubles between attempts
    assert warnings == ["notification deploy.failed to notify[0] (slack, 127.0.0.1) not "
                        "delivered after 3 attempts: the receiver answered HTTP 500"]
    assert [o.delivered for o in outcomes] == [False, True]  # the next target still hears
    assert_no_secret("\n".join(warnings) + repr(outcomes), notify_secrets)


def test_a_4xx_is_not_retried(receiver: Callable[..., Receiver], policy: RetryPolicy,
                              notify_secrets: Secrets) -> None:
    gone = receiver(404)
    warnings, outcomes = dispatch([{"type": "slack", "url": gone.url(notify_secrets.slack_path)}],
                                  policy)
    assert len(gone.requests) == 1 and outcomes[0].attempts == 1
    assert "HTTP 404: the webhook may have been deleted" in warnings[0]
    assert_no_secret(warnings[0], notify_secrets)


def test_a_hanging_receiver_times_out_and_is_warned(receiver: Callable[..., Receiver],
                                                    notify_secrets: Secrets) -> None:
    hung = receiver(hang=True)
    policy = RetryPolicy(attempts=2, backoff=0, timeout=0.3)
    started = time.monotonic()
    warnings, outcomes = dispatch(
        [{"type": "teams", "url": hung.url(notify_secrets.teams_path)}], policy)
    assert time.monotonic() - started < 5
    assert len(hung.requests) == 2
    assert warnings == ["notification deploy.failed to notify[0] (teams, 127.0.0.1) not "
                        "delivered after 2 attempts: no answer within 0.3 s"]
    assert not outcomes[0].delivered


def test_connection_refused_is_retried_and_warned(policy: RetryPolicy,
                                                  notify_secrets: Secrets) -> None:
    url = f"http://127.0.0.1:{free_port()}{notify_secrets.slack_path}"
    warnings, outcomes = dispatch([{"type": "slack", "url": url}], policy)
    assert outcomes[0].attempts == 3
    assert warnings[0].endswith("could not connect (refused, reset or no route)")
    assert_no_secret(warnings[0], notify_secrets)


@pytest.mark.parametrize("kind", ["slack", "discord", "teams", "webhook"])
def test_no_secret_in_what_the_receiver_or_a_person_sees(
        kind: str, receiver: Callable[..., Receiver], policy: RetryPolicy,
        notify_secrets: Secrets) -> None:
    rec = receiver(500)
    raw = {"type": kind, "url": rec.url(getattr(notify_secrets, f"{kind}_path", "/hook"))}
    if kind == "webhook":
        raw["secret"] = notify_secrets.hook_secret
    targets = parse_targets([raw])
    warnings, outcomes = dispatch([raw], policy)
    bodies = "\n".join(r.body.decode() + json.dumps(dict(r.headers.items()))
                       for r in rec.requests)
    assert_no_secret(bodies + "\n".join(warnings) + repr(outcomes) + repr(targets)
                     + str(targets), notify_secrets)
