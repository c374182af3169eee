"""E-mail over SMTP: STARTTLS (``smtp://``) or TLS from the start (``smtps://``).

Encryption is not optional. On ``smtp://`` forge says EHLO, and if the server does
not offer STARTTLS it stops there: no AUTH, no MAIL, nothing of the event crosses
the network in clear. After the TLS handshake (the server's certificate checked
against the SSL context given, the host name included) it says EHLO again, logs in
when a user is configured (the server picks LOGIN or PLAIN), and sends one
plain-text message:

    Subject: [production] deploy.failed: <summary>
    From / To / Date / Message-ID, X-Forge-Event: deploy.failed

    <summary>

    Environment: production
    Release: 20261206-101500-ab12cd3
    ...
    Run: https://github.com/acme/site/actions/runs/123

Failure details name the server (host and port) and the SMTP reply code, never the
server's reply text or the credentials.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from pydantic import SecretStr

from forge_ci.notify.base import Delivery
from forge_ci.notify.events import Event


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool  # smtps://; otherwise STARTTLS, which is required

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class StartTlsMissing(Exception):
    """The server offered no STARTTLS; nothing was sent."""


def render_message(event: Event, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = event.title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(event.time)
    message["Message-ID"] = make_msgid("forge", domain=sender.rpartition("@")[2])
    message["X-Forge-Event"] = event.name
    lines = [event.summary, ""]
    lines += [f"{label}: {value}" for label, value in event.facts()]
    if event.run_url:
        lines.append(f"Run: {event.run_url}")
    message.set_content("\n".join(lines) + "\n")
    return message


class SmtpNotifier:
    """One mail per event to ``recipients`` through ``server``."""

    def __init__(self, label: str, server: SmtpServer, *, sender: str,
                 recipients: tuple[str, ...], user: SecretStr | None,
                 password: SecretStr | None, ssl_context: ssl.SSLContext) -> None:
        self._label = label
        self._server = server
        self._sender = sender
        self._recipients = recipients
        self._user = user
        self._password = password
        self._context = ssl_context

    @property
    def label(self) -> str:
        return self._label

    def __repr__(self) -> str:
        return f"SmtpNotifier({self._label!r})"

    def send(self, event: Event, timeout: float) -> Delivery:
        where = str(self._server)
        try:
            self._send(render_message(event, self._sender, self._recipients), timeout)
        except StartTlsMissing:
            return Delivery.failed(
                f"{where} offers no STARTTLS: nothing sent (credentials and mail are never "
                "sent in clear); enable STARTTLS on the server or use smtps://",
                retryable=False)
        except smtplib.SMTPAuthenticationError as exc:
            return Delivery.failed(f"{where} refused the login (SMTP {exc.smtp_code}): "
                                   "check the SMTP user and password", retryable=False)
        except smtplib.SMTPNotSupportedError:
            return Delivery.failed(f"{where} offers no AUTH (SMTP login)", retryable=False)
        except smtplib.SMTPRecipientsRefused:
            return Delivery.failed(f"{where} refused every recipient", retryable=False)
        except smtplib.SMTPResponseException as exc:
            transient = 400 <= exc.smtp_code < 500
            return Delivery.failed(f"{where} answered SMTP {exc.smtp_code}", retryable=transient)
        except ssl.SSLError:
            return Delivery.failed(f"TLS with {where} failed (certificate not trusted?)",
                                   retryable=False)
        except TimeoutError:
            return Delivery.failed(f"{where} did not answer within {timeout:g} s",
                                   retryable=True)
        except (OSError, smtplib.SMTPException) as exc:
            return Delivery.failed(f"could not talk to {where} ({type(exc).__name__})",
                                   retryable=True)
        except Exception as exc:  # the contract: never raise
            return Delivery.failed(f"could not mail {where} ({type(exc).__name__})",
                                   retryable=False)
        return Delivery(ok=True, detail=f"accepted by {where}")

    def _send(self, message: EmailMessage, timeout: float) -> None:
        host, port = self._server.host, self._server.port
        smtp: smtplib.SMTP
        if self._server.implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=self._context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if not self._server.implicit_tls:
                if not smtp.has_extn("starttls"):
                    raise StartTlsMissing
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if self._user is not None and self._password is not None:
                smtp.login(self._user.get_secret_value(), self._password.get_secret_value())
            smtp.send_message(message, self._sender, list(self._recipients))
