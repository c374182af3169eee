"""E-mail against a real SMTP server (aiosmtpd on 127.0.0.1) with a certificate from a
throwaway CA the client is told to trust: STARTTLS then AUTH (LOGIN or PLAIN),
implicit TLS, a server without STARTTLS (refused before any password is sent), a
wrong password and an untrusted certificate (warned, the caller goes on)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
import requests

from forge_ci.notify import Dispatcher, Event, Outcome, RetryPolicy, build_notifiers, parse_targets

from .conftest import Mailbox, Secrets, TlsFiles, assert_no_secret

ENVIRON = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_RUN_ID": "4242",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
}


def backup_failed() -> Event:
    return Event.create("backup.failed", environment="production", project="shop",
                        summary="mysqldump exited 2 on web1", environ=ENVIRON,
                        release="20261206-101500", details={"dump_s": 3.2})


def entry(box: Mailbox, secrets_: Secrets, scheme: str = "smtp",
          login: bool = True, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": "email", "smtp": f"{scheme}://127.0.0.1:{box.port}",
                           "from": "forge@example.com",
                           "to": ["ops@example.com", "dev@example.com"], **extra}
    if login:
        raw |= {"user": secrets_.smtp_user, "password": secrets_.smtp_password}
    return raw


def send(raw: dict[str, Any], context: ssl.SSLContext,
         policy: RetryPolicy) -> tuple[list[str], list[Outcome]]:
    warnings: list[str] = []
    with requests.Session() as session:
        routes = build_notifiers(parse_targets([raw]), session=session, ssl_context=context)
        outcomes = Dispatcher(routes, policy, warnings.append).notify(backup_failed())
    return warnings, outcomes


def delivered(box: Mailbox) -> Message:
    (envelope,) = box.messages
    assert envelope.mail_from == "forge@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert isinstance(envelope.content, bytes)
    return message_from_bytes(envelope.content)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_starttls_then_auth_then_one_plain_text_mail(
        mechanism: str, smtp_server: Callable[..., Mailbox], tls_files: TlsFiles,
        notify_secrets: Secrets, policy: RetryPolicy) -> None:
    box = smtp_server("starttls", mechanisms=(mechanism,))
    warnings, outcomes = send(entry(box, notify_secrets), tls_files.client_context(), policy)
    assert warnings == [] and outcomes[0].delivered, warnings
    # the server checked the credentials, over TLS, with the mechanism it offered
    assert box.logins == [(mechanism, notify_secrets.smtp_user.encode(),
                           notify_secrets.smtp_password.encode())]
    assert box.tls_sessions == 1
    mail = delivered(box)
    assert mail["Subject"] == "[production] backup.failed: mysqldump exited 2 on web1"
    assert mail["From"] == "forge@example.com"
    assert mail["To"] == "ops@example.com, dev@example.com"
    assert mail["X-Forge-Event"] == "backup.failed"
    assert mail["Message-ID"] and mail["Date"]
    assert mail.get_content_type() == "text/plain"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode().replace("\r\n", "\n")  # CRLF on the wire
    assert text.startswith("mysqldump exited 2 on web1\n\n")
    for line in ("Environment: production", "Release: 20261206-101500",
                 f"Commit: {ENVIRON['GITHUB_SHA']}", "Actor: octocat", "dump_s: 3.2",
                 "Run: https://github.com/acme/shop/actions/runs/4242"):
        assert line in text.splitlines()
    assert_no_secret(box.messages[0].content.decode(), notify_secrets)  # type: ignore[union-attr]


def test_smtps_is_tls_from_the_first_byte(smtp_server: Callable[..., Mailbox],
                                          tls_files: TlsFiles, notify_secrets: Secrets,
                                          policy: RetryPolicy) -> None:
    box = smtp_server("implicit")
    warnings, outcomes = send(entry(box, notify_secrets, "smtps"), tls_files.client_context(),
                              policy)
    assert warnings == [] and outcomes[0].delivered
    assert [m for m, _, _ in box.logins] == ["LOGIN"] or [m for m, _, _ in box.logins] == ["PLAIN"]
    assert delivered(box)["X-Forge-Event"] == "backup.failed"


def test_a_server_without_starttls_gets_no_password_and_no_mail(
        smtp_server: Callable[..., Mailbox], tls_files: TlsFiles, notify_secrets: Secrets,
        policy: RetryPolicy) -> None:
    # This server would take AUTH in clear: only the client's refusal protects the password.
    box = smtp_server("plain")
    warnings, outcomes = send(entry(box, notify_secrets), tls_files.client_context(), policy)
    assert box.logins == [] and box.messages == []
    assert outcomes[0].attempts == 1  # not retried: the server will not grow STARTTLS
    assert warnings == [
        f"notification backup.failed to notify[0] (email, 127.0.0.1) not delivered after 1 "
        f"attempt: 127.0.0.1:{box.port} offers no STARTTLS: nothing sent (credentials and "
        "mail are never sent in clear); enable STARTTLS on the server or use smtps://"]


def test_without_credentials_starttls_is_still_required(
        smtp_server: Callable[..., Mailbox], tls_files: TlsFiles, notify_secrets: Secrets,
        policy: RetryPolicy) -> None:
    box = smtp_server("plain")
    warnings, _ = send(entry(box, notify_secrets, login=False), tls_files.client_context(),
                       policy)
    assert box.messages == [] and "offers no STARTTLS" in warnings[0]


def test_a_wrong_password_is_warned_without_the_password(
        smtp_server: Callable[..., Mailbox], tls_files: TlsFiles, notify_secrets: Secrets,
        policy: RetryPolicy) -> None:
    box = smtp_server("starttls")
    raw = entry(box, notify_secrets) | {"password": notify_secrets.smtp_password[::-1]}
    warnings, outcomes = send(raw, tls_files.client_context(), policy)
    # smtplib tries each mechanism the server offers once; forge does not retry a refusal
    assert box.messages == [] and outcomes[0].attempts == 1
    assert sorted(m for m, _, _ in box.logins) == ["LOGIN", "PLAIN"]
    assert warnings[0].endswith(
        f"127.0.0.1:{box.port} refused the login (SMTP 535): check the SMTP user and password")
    assert_no_secret(warnings[0] + repr(outcomes), notify_secrets)
    assert notify_secrets.smtp_password[::-1] not in warnings[0]


def test_an_untrusted_certificate_stops_before_auth(
        smtp_server: Callable[..., Mailbox], notify_secrets: Secrets,
        policy: RetryPolicy) -> None:
    box = smtp_server("starttls")
    warnings, _ = send(entry(box, notify_secrets), ssl.create_default_context(), policy)
    assert box.logins == [] and box.messages == []
    assert "certificate not trusted?" in warnings[0]


def test_a_server_that_is_not_there_is_retried(tls_files: TlsFiles, notify_secrets: Secrets,
                                               policy: RetryPolicy) -> None:
    from .conftest import free_port

    box = Mailbox(port=free_port())
    warnings, outcomes = send(entry(box, notify_secrets), tls_files.client_context(), policy)
    assert outcomes[0].attempts == 3
    assert f"could not talk to 127.0.0.1:{box.port}" in warnings[0]
    assert_no_secret(warnings[0], notify_secrets)
