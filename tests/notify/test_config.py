"""The `notify:` entries: what forge.yml accepts, the errors a user gets for what it
does not (naming the entry, never a value), and secrets that never print."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from forge_ci.errors import ConfigError
from forge_ci.notify import build_notifiers, parse_targets
from forge_ci.notify.config import EmailTarget, SlackTarget, WebhookTarget
from forge_ci.notify.email import SmtpServer

from .conftest import Secrets, assert_no_secret

SLACK = "https://hooks.slack.com"


def one(raw: dict[str, Any]) -> Any:
    (target,) = parse_targets([raw])
    return target


def error(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_targets(raw)
    return str(caught.value)


def test_the_documented_example_parses(notify_secrets: Secrets) -> None:
    targets = parse_targets([
        {"type": "slack", "url": SLACK + notify_secrets.slack_path,
         "events": ["deploy.failed", "backup.failed", "monitor"]},
        {"type": "webhook", "url": "https://hooks.example.com/forge",
         "secret": notify_secrets.hook_secret},
        {"type": "email", "smtp": "smtp://mail.example.com:587", "from": "forge@example.com",
         "to": ["ops@example.com"], "user": notify_secrets.smtp_user,
         "password": notify_secrets.smtp_password},
        {"type": "discord", "url": "https://discord.com" + notify_secrets.discord_path},
        {"type": "teams", "url": "https://prod-01.westeurope.logic.azure.com"
                                 + notify_secrets.teams_path},
    ])
    slack, hook, mail, _, _ = targets
    assert isinstance(slack, SlackTarget) and slack.events == ("deploy.failed", "backup.failed",
                                                               "monitor")
    assert isinstance(hook, WebhookTarget) and hook.events == ()
    assert isinstance(mail, EmailTarget)
    assert mail.server == SmtpServer("mail.example.com", 587, implicit_tls=False)
    assert mail.from_ == "forge@example.com"
    shown = repr(targets) + str(targets) + "".join(t.model_dump_json() for t in targets)
    assert_no_secret(shown, notify_secrets)
    with requests.Session() as session:
        routes = build_notifiers(targets, session=session)
    assert [r.notifier.label for r in routes] == [
        "notify[0] (slack, hooks.slack.com)", "notify[1] (webhook, hooks.example.com)",
        "notify[2] (email, mail.example.com)", "notify[3] (discord, discord.com)",
        "notify[4] (teams, prod-01.westeurope.logic.azure.com)"]
    assert_no_secret(repr(routes), notify_secrets)


def test_smtp_urls() -> None:
    base = {"type": "email", "from": "forge@example.com", "to": ["ops@example.com"]}
    assert one(base | {"smtp": "smtp://mail.example.com"}).server.port == 587
    assert one(base | {"smtp": "smtps://mail.example.com"}).server == SmtpServer(
        "mail.example.com", 465, implicit_tls=True)
    assert "smtp://HOST[:PORT] (STARTTLS" in error([base | {"smtp": "mail.example.com:25"}])
    assert "smtp://HOST[:PORT] (STARTTLS" in error([base | {"smtp": "http://mail.example.com"}])
    assert "names no host" in error([base | {"smtp": "smtp://:587"}])
    assert "port that is not a number" in error([base | {"smtp": "smtp://m.example.com:99999"}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "pagerduty", "url": SLACK}, "notify[0].type: unknown notification type "
                                             "'pagerduty'\n  hint: use one of: slack, discord, "
                                             "teams, webhook, email"),
        ({"url": SLACK}, "notify[0]: every entry needs `type:`"),
        ({"type": "slack", "url": SLACK, "events": ["deploy.faild"]},
         "notify[0].events: unknown event 'deploy.faild': use an event name (deploy.succeeded"),
        ({"type": "slack", "url": SLACK, "channel": "#ops"},
         "notify[0].channel: Extra inputs are not permitted"),
        ({"type": "webhook", "url": "https://h.example.com/x"}, "notify[0].secret: Field required"),
        ({"type": "webhook", "url": "https://h.example.com/x", "secret": "short"},
         "notify[0].secret: must be at least 16 characters"),
        ({"type": "email", "smtp": "smtp://m.example.com", "from": "forge@example.com",
          "to": []}, "notify[0].to: needs at least one entry"),
        ({"type": "email", "smtp": "smtp://m.example.com", "from": "forge", "to": ["o@e.com"]},
         "notify[0].from: 'forge' is not an e-mail address"),
        ({"type": "email", "smtp": "smtp://m.example.com", "from": "f@example.com",
          "to": ["o@e.com"], "user": "someone"},
         "notify[0]: give both `user:` and `password:`"),
    ],
)
def test_errors_name_the_entry_and_what_to_do(raw: dict[str, Any], message: str) -> None:
    assert message in error([raw])


def test_not_a_list() -> None:
    assert "notify: must be a list of targets" in error({"type": "slack"})
    assert "notify[0]: must be a mapping" in error(["slack"])
    assert parse_targets(None) == ()


def test_url_errors_never_show_the_url(notify_secrets: Secrets) -> None:
    token = notify_secrets.slack_path
    cases = {
        "http://hooks.slack.com" + token: "must use https://",
        "ftp://hooks.slack.com" + token: "must be an https:// URL",
        f"https://user:{notify_secrets.smtp_password}@hooks.slack.com" + token:
            "must not carry a user or password",
    }
    for url, message in cases.items():
        text = error([{"type": "slack", "url": url}])
        assert message in text
        assert_no_secret(text, notify_secrets)
    smtp = error([{"type": "email", "from": "f@example.com", "to": ["o@example.com"],
                   "smtp": f"smtp://u:{notify_secrets.smtp_password}@m.example.com"}])
    assert "must not carry credentials: put them in `user:` and `password:`" in smtp
    assert_no_secret(smtp, notify_secrets)


def test_plain_http_only_to_this_machine() -> None:
    for host in ("127.0.0.1:8080", "localhost", "[::1]:9000"):
        assert one({"type": "discord", "url": f"http://{host}/hook"}).type == "discord"


def test_models_are_frozen(notify_secrets: Secrets) -> None:
    target = one({"type": "slack", "url": SLACK + notify_secrets.slack_path})
    with pytest.raises(ValueError, match="frozen"):
        target.events = ("deploy",)


def test_forge_yml_errors_in_notify_name_the_entry_never_the_url(
        notify_secrets: Secrets) -> None:
    from forge_ci.config.loader import parse

    url = "http://hooks.example.com" + notify_secrets.slack_path
    with pytest.raises(ConfigError) as caught:
        parse(f"version: 1\nproject: t\nnotify:\n  - {{type: slack, url: '{url}'}}\n"
              "environments:\n  local: {path: x}\n", {})
    assert str(caught.value).startswith("forge.yml:4: notify[0].url: must use https://")
    assert_no_secret(str(caught.value), notify_secrets)
    with pytest.raises(ConfigError) as caught:
        parse("version: 1\nproject: t\nenvironments:\n  local:\n    path: x\n"
              "    notify: [{type: webhook, url: '${HOOK}', secret: short}]\n",
              {"HOOK": "https://hooks.example.com" + notify_secrets.slack_path})
    assert "environments.local.notify[0].secret: must be at least 16" in str(caught.value)
    assert_no_secret(str(caught.value), notify_secrets)
