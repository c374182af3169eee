"""The ``notify:`` entries of forge.yml as frozen models, and the notifiers they make.

::

    notify:
      - { type: slack,   url: "${SLACK_WEBHOOK}", events: [deploy.failed, monitor] }
      - { type: discord, url: "${DISCORD_WEBHOOK}" }
      - { type: teams,   url: "${TEAMS_WEBHOOK}" }
      - { type: webhook, url: "${HOOK_URL}", secret: "${HOOK_SECRET}" }
      - { type: email, smtp: "smtp://mail.example.com:587", from: forge@example.com,
          to: [ops@example.com], user: "${SMTP_USER}", password: "${SMTP_PASSWORD}" }

Every entry takes ``events:`` (names or groups from :mod:`forge_ci.notify.events`;
none means all). Chat webhook URLs, the HMAC secret and the SMTP user and password
are :class:`~pydantic.SecretStr`: a webhook URL is itself a credential (whoever holds
it can post), so it never prints, and errors name an entry by its place
(``notify[0]``) and host only.

URLs must be ``https://``; plain ``http://`` is accepted for a loopback host only
(a receiver on the same machine). ``smtp://`` means STARTTLS, which forge insists
on before it sends anything; ``smtps://`` means TLS from the first byte.

:func:`parse_targets` validates a raw list (as YAML gives it) and translates
pydantic's errors into :class:`~forge_ci.errors.ConfigError`;
:func:`build_notifiers` turns validated entries into routes for the dispatcher.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import SplitResult, urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from forge_ci.errors import ConfigError
from forge_ci.notify.base import Notifier, Route
from forge_ci.notify.events import check_selector

if TYPE_CHECKING:  # the senders load when notifications are built, not with the config
    import ssl

    import requests

    from forge_ci.notify.email import SmtpServer

_SMTP_PORTS = {"smtp": 587, "smtps": 465}


class _Target(BaseModel):
    # hide_input_in_errors: a pydantic error would otherwise quote the URL or secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True,
                              populate_by_name=True)

    events: tuple[str, ...] = ()

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_selector(s) for s in value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: SecretStr) -> SecretStr:
    # Messages name the problem, never the value: the URL is a secret.
    parts = urlsplit(url.get_secret_value())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL (the value is not shown: it is a secret)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            "must use https:// (http:// only for a receiver on this machine): "
            "the URL and what is posted to it would cross the network in clear"
        )
    if parts.username or parts.password:
        raise ValueError("must not carry a user or password in the URL")
    return url


class _UrlTarget(_Target):
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_url(value)

    @property
    def host(self) -> str:
        return urlsplit(self.url.get_secret_value()).hostname or "?"


class SlackTarget(_UrlTarget):
    type: Literal["slack"]


class DiscordTarget(_UrlTarget):
    type: Literal["discord"]


class TeamsTarget(_UrlTarget):
    type: Literal["teams"]


class WebhookTarget(_UrlTarget):
    """A JSON POST signed with HMAC-SHA256 (see :mod:`forge_ci.notify.http`)."""

    type: Literal["webhook"]
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://host[:port]`` (STARTTLS, port 587) or ``smtps://host[:port]`` (TLS, 465)."""
    # Here, not with the module: smtplib and ssl cost every run ~15 ms of imports.
    from forge_ci.notify.email import SmtpServer

    parts: SplitResult = urlsplit(url)
    if parts.scheme not in _SMTP_PORTS:
        raise ValueError(
            "must be smtp://HOST[:PORT] (STARTTLS, port 587 by default) or "
            "smtps://HOST[:PORT] (TLS from the start, port 465 by default)"
        )
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: put them in `user:` and `password:`")
    if not parts.hostname:
        raise ValueError("names no host: write smtp://mail.example.com:587")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be only a scheme, host and port")
    try:
        port = parts.port or _SMTP_PORTS[parts.scheme]
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    return SmtpServer(parts.hostname, port, parts.scheme == "smtps")


def _check_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    bad = any(c.isspace() or c in '<>,;"' for c in value)
    if not at or not local or bad or ("." not in domain and domain != "localhost"):
        raise ValueError(f"{value!r} is not an e-mail address like ops@example.com")
    return value


class EmailTarget(_Target):
    type: Literal["email"]
    smtp: str
    from_: Annotated[str, Field(alias="from")]
    to: tuple[str, ...] = Field(min_length=1)
    user: SecretStr | None = None
    password: SecretStr | None = None

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        parse_smtp_url(value)
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("to")
    @classmethod
    def _to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_address(v) for v in value)

    @model_validator(mode="after")
    def _both_or_neither(self) -> EmailTarget:
        if (self.user is None) != (self.password is None):
            raise ValueError("give both `user:` and `password:` for SMTP AUTH, or neither")
        return self

    @property
    def server(self) -> SmtpServer:
        return parse_smtp_url(self.smtp)

    @property
    def host(self) -> str:
        return self.server.host


NotifyTarget = Annotated[
    SlackTarget | DiscordTarget | TeamsTarget | WebhookTarget | EmailTarget,
    Field(discriminator="type"),
]
TYPES = ("slack", "discord", "teams", "webhook", "email")

_ADAPTER: pydantic.TypeAdapter[list[NotifyTarget]] = pydantic.TypeAdapter(list[NotifyTarget])


# pydantic's wording where a forge.yml user needs other words
_MESSAGES = {
    "union_tag_not_found": f"every entry needs `type:` (one of: {', '.join(TYPES)})",
    "too_short": "needs at least one entry",
    "model_type": "must be a mapping like `{ type: slack, url: ... }`",
    "model_attributes_type": "must be a mapping like `{ type: slack, url: ... }`",
}


def parse_targets(raw: object, *, file: str | None = None,
                  key: str = "notify") -> tuple[NotifyTarget, ...]:
    """Validate the raw ``notify:`` list; a :class:`ConfigError` names the entry
    (``notify[1].smtp``) and what to do, never a value."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("must be a list of targets, one `- { type: ..., ... }` each",
                          file=file, key=key)
    for index, entry in enumerate(raw):
        if isinstance(entry, dict) and "type" in entry and entry["type"] not in TYPES:
            raise ConfigError(
                f"unknown notification type {str(entry['type'])[:40]!r}",
                file=file, key=f"{key}[{index}].type",
                hint=f"use one of: {', '.join(TYPES)}",
            )
    try:
        return tuple(_ADAPTER.validate_python(raw))
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        where = key + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in first["loc"]
            if part not in TYPES  # the union's tag adds the type name to the path
        )
        message = _MESSAGES.get(first["type"], first["msg"].removeprefix("Value error, "))
        raise ConfigError(message, file=file, key=where.replace(".from_", ".from")) from None


def label(index: int, target: NotifyTarget) -> str:
    """How warnings and results name a target: place, type and host, never the URL."""
    return f"notify[{index}] ({target.type}, {target.host})"


def build_notifiers(
    targets: Sequence[NotifyTarget],
    *,
    session: requests.Session,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], float] | None = None,
) -> list[Route]:
    """One route per target. ``session`` carries every HTTP post; ``ssl_context``
    is what the SMTP client trusts (the system's CAs when None)."""
    import ssl

    from forge_ci.notify.email import SmtpNotifier
    from forge_ci.notify.http import (
        discord_notifier,
        slack_notifier,
        teams_notifier,
        webhook_notifier,
    )

    routes: list[Route] = []
    for index, target in enumerate(targets):
        name = label(index, target)
        notifier: Notifier
        if isinstance(target, SlackTarget):
            notifier = slack_notifier(name, target.url, session)
        elif isinstance(target, DiscordTarget):
            notifier = discord_notifier(name, target.url, session)
        elif isinstance(target, TeamsTarget):
            notifier = teams_notifier(name, target.url, session)
        elif isinstance(target, WebhookTarget):
            notifier = webhook_notifier(name, target.url, target.secret, session, clock=clock)
        else:
            notifier = SmtpNotifier(
                name, target.server, sender=target.from_, recipients=target.to,
                user=target.user, password=target.password,
                ssl_context=ssl_context or ssl.create_default_context(),
            )
        routes.append(Route(notifier, target.events))
    return routes

