"""The top-level ``provision:`` section of forge.yml (owned by the provision package).

One section serves every environment: ``forge-ci provision production`` makes
the server ``<project>-production`` from it, ``staging`` makes ``<project>-staging``.
Values that differ per environment (the deploy path, the deploy user, the site's
host name) are taken from the environment itself unless given here.

Sketch::

    provision:
      provider: hetzner
      server_type: cx22
      image: ubuntu-24.04
      location: fsn1
      fallback_locations: [nbg1, hel1]      # tried in order on resource_unavailable
      fallback_server_types: [cx32]         # after every location of the type before
      ssh_sources: [203.0.113.0/24]         # who may reach SSH (firewall); 80/443 are open
      labels: { team: web }
      swap_mb: 2048
      php_version: "8.3"
      wait: { poll_interval: 2, action_timeout: 600, boot_timeout: 1800 }
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forge_ci.config.panel import PanelConfig

# Hetzner label syntax: optional DNS prefix + "/" + name; values may be empty.
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
# Keys forge sets itself; a user label must not change what forge recognises as its own.
RESERVED_LABELS = frozenset({"managed-by", "forge-project", "forge-environment"})
_NAME_FIELDS = frozenset({"project", "environment"})
BUILTIN_PROVIDERS = ("hetzner", "ssh", "cyberpanel", "cpanel")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProvisionWait(_Frozen):
    """How long and how often to wait. Real creates take minutes; tests pass zeros."""

    poll_interval: Annotated[float, Field(ge=0, le=300)] = 2.0
    # One API action (create, delete): Hetzner's take seconds to a few minutes.
    action_timeout: Annotated[float, Field(gt=0, le=7200)] = 600.0
    # First SSH login plus cloud-init installing the stack (apt): the long part.
    boot_timeout: Annotated[float, Field(gt=0, le=7200)] = 1800.0
    api_retries: Annotated[int, Field(ge=0, le=20)] = 5
    # Wait before the first retry of a rate-limited or failed call; doubles each time.
    api_backoff: Annotated[float, Field(ge=0, le=60)] = 1.0


_ACME_NAMES = ("letsencrypt", "letsencrypt-staging", "off")
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


class HttpsConfig(_Frozen):
    """``environments.<name>.https``: the site's ACME certificate (forge-https on the server).

    ``acme`` is ``letsencrypt``, ``letsencrypt-staging``, an ACME directory URL
    (``https://...``) or ``off`` (TLS ends in front of the server). The names are
    the host of the environment's ``url`` followed by ``names``.
    """

    email: str | None = Field(None, pattern=r"^[^@\s'\"\\$`]+@[^@\s'\"\\$`]+\.[^@\s'\"\\$`]+$")
    acme: str = "letsencrypt"
    hsts: bool = False
    names: tuple[str, ...] = ()
    # A file on the server trusting a private CA's ACME API (lego's LEGO_CA_CERTIFICATES).
    ca_file: str | None = Field(None, pattern=r"^/[A-Za-z0-9._/-]+$")

    @field_validator("acme", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        # YAML reads a bare `acme: off` as false.
        return "off" if value is False else value

    @field_validator("acme")
    @classmethod
    def _acme(cls, value: str) -> str:
        if value in _ACME_NAMES:
            return value
        if re.fullmatch(r"https://[A-Za-z0-9._~:/?#@!&+,;=%-]+", value):
            return value
        raise ValueError(f"acme {value!r}: use letsencrypt, letsencrypt-staging, off or the "
                         "https:// directory URL of an ACME CA")

    @field_validator("names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HOST_NAME.match(name) or "." not in name or len(name) > 253:
                raise ValueError(f"{name!r} is not a host name (lower case, like www.example.com)")
        return value


class ProvisionConfig(_Frozen):
    # Built in: BUILTIN_PROVIDERS; any other name is a forge_ci.providers plugin.
    provider: str = "hetzner"
    # provider ssh: the sudo-capable account forge logs in as to set the server up.
    admin_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    # Server name; "{project}" and "{environment}" are replaced. Default: project-environment.
    name: str | None = Field(None, min_length=1, max_length=63)
    server_type: str = Field("cx22", pattern=r"^[a-z0-9-]{1,32}$")
    image: str = Field("ubuntu-24.04", pattern=r"^[a-z0-9.-]{1,64}$")
    location: str = Field("fsn1", pattern=r"^[a-z0-9-]{1,32}$")
    fallback_locations: tuple[str, ...] = ()
    fallback_server_types: tuple[str, ...] = ()
    ssh_sources: tuple[str, ...] = Field(default=("0.0.0.0/0", "::/0"), min_length=1)
    # The port sshd listens on and the firewall opens to ssh_sources.
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    labels: dict[str, str] = Field(default_factory=dict)
    # Default: the environment's hosts[0].user, else "deploy".
    deploy_user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Default: the environment's path when absolute, else /srv/www/<project>.
    path: str | None = Field(None, pattern=r"^/[A-Za-z0-9._/-]*$")
    php_version: str = Field("8.3", pattern=r"^[5-9]\.[0-9]$")
    # Database for the site; default <project>_<environment> with "-" as "_".
    database: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,64}$")
    swap_mb: Annotated[int, Field(ge=0, le=65536)] = 2048
    wait: ProvisionWait = ProvisionWait()
    # provider: cyberpanel | cpanel (forge_ci/config/panel.py)
    panel: PanelConfig = PanelConfig()

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value in BUILTIN_PROVIDERS:
            return value
        from forge_ci.plugins import names  # metadata only: the plugin loads when used

        plugins = names("forge_ci.providers")
        if value not in plugins:
            known = ", ".join((*BUILTIN_PROVIDERS, *plugins))
            raise ValueError(f"provider {value!r} is not one of {known} (a plugin in "
                             "forge_ci.providers adds more)")
        return value

    @field_validator("fallback_locations", "fallback_server_types")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.fullmatch(r"[a-z0-9-]{1,32}", item):
                raise ValueError(f"{item!r} is not a Hetzner name (lowercase letters, digits, -)")
        if len(set(value)) != len(value):
            raise ValueError("a fallback is listed twice")
        return value

    @field_validator("ssh_sources")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for item in value:
            try:
                net = ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not a network in CIDR notation (203.0.113.0/24, 2001:db8::/32)"
                ) from None
            out.append(str(net))  # "203.0.113.7" becomes "203.0.113.7/32", as Hetzner wants
        return tuple(out)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if key in RESERVED_LABELS:
                raise ValueError(f"label {key!r} is set by forge and cannot be overridden")
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} is not valid for Hetzner")
            if not _LABEL_VALUE.match(val):
                raise ValueError(f"label {key!r}: value must be up to 63 letters, digits, "
                                 "'-', '_' or '.', starting and ending alphanumeric")
        return value

    @field_validator("name")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = set(re.findall(r"\{([^}]*)\}", value))
        if not fields <= _NAME_FIELDS:
            raise ValueError("name may only use {project} and {environment}")
        return value

    def server_name(self, project: str, environment: str) -> str:
        """The server's name for ``environment`` (not yet checked as a hostname)."""
        template = self.name or "{project}-{environment}"
        return template.replace("{project}", project).replace("{environment}", environment)
