"""HTTP targets: Slack, Discord and Microsoft Teams webhooks, and a signed JSON webhook.

Each target is an :class:`HttpNotifier` (the seam's contract is in
:mod:`forge_ci.notify.base`) with a *render* function that turns an event into a
body and headers; the renderers are pure, so the formats are tested as data.

- **Slack** incoming webhook: ``text`` (the fallback shown in notifications) and
  ``blocks``: a header, the summary, the facts as fields, a link to the run.
- **Discord** webhook: ``content`` plus one embed (title, summary, colour by
  severity, facts as inline fields, the run as the embed's URL);
  ``allowed_mentions`` is empty, so nothing in a summary can ping ``@everyone``.
- **Teams**: a ``message`` whose one attachment is an Adaptive Card (version 1.4),
  the form both a Teams Workflows "post to a channel when a webhook request is
  received" flow and a legacy incoming webhook accept.
- **Generic webhook**: the event's JSON (:meth:`Event.to_dict`), signed.

Signed webhook
--------------

The body is compact UTF-8 JSON. Three headers come with it::

    X-Forge-Event:      deploy.failed
    X-Forge-Timestamp:  1765058400            (Unix seconds when it was sent)
    X-Forge-Signature:  sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes
(before any JSON parsing), compares in constant time, and rejects old timestamps
so a captured request cannot be replayed later::

    import hashlib, hmac, time

    def verify(secret: bytes, headers, body: bytes, tolerance: int = 300) -> bool:
        timestamp = headers["X-Forge-Timestamp"]
        expected = hmac.new(secret, timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        given = headers["X-Forge-Signature"].removeprefix("sha256=")
        fresh = abs(time.time() - int(timestamp)) <= tolerance
        return fresh and hmac.compare_digest(expected, given)

Failures are reported by kind (timed out, could not connect, TLS, HTTP status);
the URL and the exception's text (which quotes it) are never shown.
Redirects are not followed: a webhook that answers 3xx has moved or is not one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import SecretStr

from forge_ci.notify.base import Delivery
from forge_ci.notify.events import Event, Severity

USER_AGENT = "forge-ci-notify/1"

_COLOURS = {  # Discord embed colours (0xRRGGBB); Teams has named styles
    Severity.INFO: 0x2EB67D,
    Severity.WARNING: 0xECB22E,
    Severity.ERROR: 0xE01E5A,
    Severity.CRITICAL: 0x8B0000,
}
_TEAMS_STYLE = {
    Severity.INFO: "good",
    Severity.WARNING: "warning",
    Severity.ERROR: "attention",
    Severity.CRITICAL: "attention",
}
_ICONS = {Severity.INFO: "✅", Severity.WARNING: "⚠️", Severity.ERROR: "❌",
          Severity.CRITICAL: "🚨"}


@dataclass(frozen=True)
class Request:
    """What one attempt posts."""

    body: bytes
    headers: dict[str, str]


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: Event) -> dict[str, Any]:
    header = f"{_ICONS[event.severity]} {event.environment}: {event.name}"
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_slack_escape(value)}", 2000)}
        for label, value in event.facts()[:10]  # Slack allows ten fields per section
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(header, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(event.summary)}},
        {"type": "section", "fields": fields},
    ]
    if event.run_url:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{event.run_url}|Open the workflow run>"}]})
    return {"text": _cut(event.title, 3000), "blocks": blocks}


def discord_payload(event: Event) -> dict[str, Any]:
    embed: dict[str, Any] = {
        "title": _cut(f"{event.environment}: {event.name}", 256),
        "description": _cut(event.summary, 4096),
        "color": _COLOURS[event.severity],
        "fields": [
            {"name": _cut(label, 256), "value": _cut(value, 1024), "inline": True}
            for label, value in event.facts()[:25]
        ],
        "timestamp": event.time.isoformat(),
    }
    if event.run_url:
        embed["url"] = event.run_url
    return {
        "content": _cut(f"{_ICONS[event.severity]} {event.title}", 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


def teams_payload(event: Event) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
         "color": _TEAMS_STYLE[event.severity],
         "text": f"{_ICONS[event.severity]} {event.environment}: {event.name}"},
        {"type": "TextBlock", "wrap": True, "text": event.summary},
        {"type": "FactSet",
         "facts": [{"title": label, "value": value} for label, value in event.facts()]},
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if event.run_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the workflow run",
                            "url": event.run_url}]
    return {
        "type": "message",
        "summary": _cut(event.title, 200),
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                         "contentUrl": None, "content": card}],
    }


def _json_request(payload: dict[str, Any]) -> Request:
    return Request(_json(payload), {"Content-Type": "application/json"})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Forge-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def webhook_request(event: Event, secret: SecretStr, timestamp: int) -> Request:
    body = _json(event.to_dict())
    return Request(body, {
        "Content-Type": "application/json",
        "X-Forge-Event": event.name,
        "X-Forge-Timestamp": str(timestamp),
        "X-Forge-Signature": sign(secret.get_secret_value().encode(), timestamp, body),
    })


class HttpNotifier:
    """POST ``render(event)`` to a URL held as a secret."""

    def __init__(self, label: str, url: SecretStr, render: Callable[[Event], Request],
                 session: requests.Session) -> None:
        self._label = label
        self._url = url
        self._render = render
        self._session = session

    @property
    def label(self) -> str:
        return self._label

    def __repr__(self) -> str:
        return f"HttpNotifier({self._label!r})"

    def send(self, event: Event, timeout: float) -> Delivery:
        try:
            request = self._render(event)
            headers = {"User-Agent": USER_AGENT, **request.headers}
            response = self._session.post(self._url.get_secret_value(), data=request.body,
                                          headers=headers, timeout=timeout,
                                          allow_redirects=False)
            response.close()
        except requests.Timeout:
            return Delivery.failed(f"no answer within {timeout:g} s", retryable=True)
        except requests.exceptions.SSLError:
            return Delivery.failed("TLS handshake failed (certificate not trusted?)",
                                   retryable=False)
        except requests.ConnectionError:
            return Delivery.failed("could not connect (refused, reset or no route)",
                                   retryable=True)
        except Exception as exc:  # the contract: never raise, never quote the URL
            return Delivery.failed(f"could not post ({type(exc).__name__})", retryable=False)
        return _judge(response.status_code)


def _judge(status: int) -> Delivery:
    if 200 <= status < 300:
        return Delivery(ok=True, detail=f"HTTP {status}")
    if status == 429 or status >= 500:
        return Delivery.failed(f"the receiver answered HTTP {status}", retryable=True)
    hint = ""
    if status in (401, 403, 404, 410):
        hint = ": the webhook may have been deleted or its URL/secret is wrong"
    elif 300 <= status < 400:
        hint = ": redirects are not followed; use the webhook's final URL"
    return Delivery.failed(f"the receiver answered HTTP {status}{hint}", retryable=False)


def slack_notifier(label: str, url: SecretStr, session: requests.Session) -> HttpNotifier:
    return HttpNotifier(label, url, lambda e: _json_request(slack_payload(e)), session)


def discord_notifier(label: str, url: SecretStr, session: requests.Session) -> HttpNotifier:
    return HttpNotifier(label, url, lambda e: _json_request(discord_payload(e)), session)


def teams_notifier(label: str, url: SecretStr, session: requests.Session) -> HttpNotifier:
    return HttpNotifier(label, url, lambda e: _json_request(teams_payload(e)), session)


def webhook_notifier(label: str, url: SecretStr, secret: SecretStr, session: requests.Session,
                     *, clock: Callable[[], float] | None = None) -> HttpNotifier:
    now = clock or time.time

    def render(event: Event) -> Request:
        return webhook_request(event, secret, int(now()))

    return HttpNotifier(label, url, render, session)
