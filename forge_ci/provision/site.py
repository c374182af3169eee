"""What the server must host for one environment, resolved from forge.yml.

The ``provision:`` section is shared by all environments; this module fills in
the per-environment values (server name, deploy user, path, database, the
site's host name) and checks the results once, here, with ConfigErrors that
name the key to fix.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from forge_ci.config import ForgeConfig
from forge_ci.config.provision import ProvisionConfig
from forge_ci.errors import ConfigError

# RFC 1123 host name, as Hetzner requires for server names.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,63}}$){_LABEL}(\.{_LABEL})*$")


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
                swap_mb=prov.swap_mb, ssh_port=prov.ssh_port, hostnames=_hostnames(target.url),
                https=bool(target.url and target.url.startswith("https://")))


def _hostnames(url: str | None) -> tuple[str, ...]:
    if not url:
        return ()
    host = urllib.parse.urlsplit(url).hostname
    return (host,) if host else ()
