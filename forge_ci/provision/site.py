"""What the server must host for one environment, resolved from forge.yml.

The ``provision:`` section is shared by all environments; this module fills in
the per-environment values (server name, deploy user, path, database, the
site's host name) and checks the results once, here, with ConfigErrors that
name the key to fix.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import urllib.parse
from dataclasses import dataclass

from forge_ci.config import ForgeConfig
from forge_ci.config.models import HostConfig
from forge_ci.config.provision import HttpsConfig, ProvisionConfig
from forge_ci.errors import ConfigError

# RFC 1123 host name, as Hetzner requires for server names.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,63}}$){_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True)
class Https:
    """What forge-https gets on the server (its settings file, /etc/forge-https.env)."""

    names: tuple[str, ...]  # the first is the certificate's main name
    acme: str  # letsencrypt | letsencrypt-staging | off | a directory URL
    email: str | None
    hsts: bool
    ca_file: str | None = None  # trust for a private CA's ACME API (a path on the server)

    def settings(self) -> str:
        """The settings file's text, sourced by forge-https (bash)."""
        values = {"FORGE_HTTPS_DOMAINS": " ".join(self.names), "FORGE_HTTPS_ACME": self.acme,
                  "FORGE_HTTPS_HSTS": "true" if self.hsts else "false"}
        if self.email:
            values["FORGE_HTTPS_EMAIL"] = self.email
        if self.ca_file:
            values["FORGE_HTTPS_CA_FILE"] = self.ca_file
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


@dataclass(frozen=True)
class Site:
    project: str
    environment: str
    server_name: str
    deploy_user: str
    path: str  # absolute; <path>/current/web is the docroot
    php_version: str
    database: str
    swap_mb: int
    ssh_port: int
    hostnames: tuple[str, ...]  # nginx server_name; empty means any
    https: bool = False  # the site's url is https: the preview must say so to WordPress
    # The site's certificate; None: no ACME at all (no https: key and an http:// url).
    tls: Https | None = None


def provision_section(config: ForgeConfig, file: str) -> ProvisionConfig:
    if config.provision is None:
        raise ConfigError("no provision: section", file=file, key="provision",
                          hint="add e.g. provision: { provider: hetzner, server_type: cx22, "
                               "image: ubuntu-24.04, location: fsn1 }")
    return config.provision


def resolve(config: ForgeConfig, environment: str, file: str) -> Site:
    """The :class:`Site` for ``environment`` (which must exist in ``config``)."""
    prov = provision_section(config, file)
    target = config.environments[environment]
    name = prov.server_name(config.project, environment)
    if not _HOSTNAME.match(name):
        raise ConfigError(f"server name {name!r} is not a valid host name", file=file,
                          key="provision.name",
                          hint="use lowercase letters, digits and '-', at most 63 characters")
    user = prov.deploy_user or (target.hosts[0].user if target.hosts else "deploy")
    if user == "root":
        raise ConfigError("the deploy user cannot be root", file=file, key="provision.deploy_user")
    default = target.path if target.path.startswith("/") else f"/srv/www/{config.project}"
    path = prov.path or default
    path = posixpath.normpath(path)
    if path == "/" or ".." in path.split("/"):
        raise ConfigError(f"deploy path {path!r} is not usable", file=file, key="provision.path")
    database = prov.database or f"{config.project}_{environment}".replace("-", "_")[:64]
    return Site(project=config.project, environment=environment, server_name=name,
                deploy_user=user, path=path, php_version=prov.php_version, database=database,
                swap_mb=prov.swap_mb, ssh_port=_ssh_port(prov, target.hosts),
                hostnames=_hostnames(target.url),
                https=bool(target.url and target.url.startswith("https://")),
                tls=_https(config, environment, file))


def _ssh_port(prov: ProvisionConfig, hosts: tuple[HostConfig, ...]) -> int:
    # provider ssh: sshd keeps the port forge reaches the server on.
    if prov.provider == "ssh" and hosts and "ssh_port" not in prov.model_fields_set:
        return hosts[0].port
    return prov.ssh_port


def _https(config: ForgeConfig, environment: str, file: str) -> Https | None:
    target = config.environments[environment]
    wanted = target.https
    if wanted is None:
        if not (target.url and target.url.startswith("https://")):
            return None
        wanted = HttpsConfig.model_validate({})
    names = tuple(dict.fromkeys(_hostnames(target.url) + wanted.names))
    if wanted.acme != "off" and not names:
        raise ConfigError("https needs the site's host name", file=file,
                          key=f"environments.{environment}.url",
                          hint="set url: https://www.example.com (or https.names)")
    return Https(names=names, acme=wanted.acme, email=wanted.email, hsts=wanted.hsts,
                 ca_file=wanted.ca_file)


def _hostnames(url: str | None) -> tuple[str, ...]:
    if not url:
        return ()
    host = urllib.parse.urlsplit(url).hostname
    return (host,) if host else ()
