"""``provision.panel``: the keys of the control-panel providers (``cyberpanel``, ``cpanel``).

Sketch::

    provision:
      provider: cpanel            # or cyberpanel
      path: /home/libyan/public_html/example.ly   # the site's root; docroot is <path>/current/web
      panel:
        domain: example.ly        # default: the host of the environment's url
        website: sites.example.ly # cyberpanel only: the website that owns the child domain
        package: Default          # cyberpanel only
        owner_email: ops@example.ly  # cyberpanel only; forge tags it (+forge-<project>-<env>)
        php: PHP 8.2              # cyberpanel only
        ssh_host: 203.0.113.7     # where deploys connect; default: the panel URL's host
        ca_file: /path/ca.pem     # a private CA for the panel's TLS certificate
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_DOMAIN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"


class PanelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str | None = Field(default=None, max_length=253, pattern=_DOMAIN)
    website: str | None = Field(default=None, max_length=253, pattern=_DOMAIN)
    package: str = Field(default="Default", pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    owner_email: str = Field(default="admin@localhost.localdomain",
                             pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+$")
    php: str = Field(default="PHP 8.2", pattern=r"^PHP [5-9]\.[0-9]$")
    ssh_host: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9.:-]+$")
    ca_file: str | None = None
