"""What the control-panel providers (``cyberpanel``, ``cpanel``) share.

A panel does not make servers: it makes a *site* (a domain with its document
root, a database, a login) on a server someone already runs. So a panel
provider's :class:`~forge_ci.provision.base.ServerInfo` names the account's SSH
address, ``boots_from_user_data`` is False, and the few things no panel API can
do are done over SSH as the site's own user through :class:`Account`:

- whether the deploy key already logs in (observe, read only);
- installing the key with a one-time password (CyberPanel: its API puts keys in
  root's authorized_keys only);
- making ``<path>/current`` a link before cPanel creates the document root
  (cPanel makes it like ``mkdir -p``, and forge switches releases by moving
  that link, so it must not become a directory).

Host keys are pinned as everywhere else: FORGE_KNOWN_HOSTS must list the server.
"""

from __future__ import annotations

import posixpath
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import paramiko

from forge_ci.config.provision import ProvisionConfig
from forge_ci.errors import ConfigError, SecretError
from forge_ci.provision.base import ServerInfo
from forge_ci.provision.errors import BootstrapError
from forge_ci.provision.site import Site
from forge_ci.remote.base import sh

PLACEHOLDER = ".forge-placeholder"  # the release `current` points at before the first deploy


@dataclass(frozen=True)
class PanelSite:
    """The site a panel provider makes for one environment."""

    project: str
    environment: str
    name: str  # the server name forge uses for this environment (--confirm NAME)
    domain: str
    path: str  # absolute; the document root is <path>/current/web
    database: str
    ssh_host: str
    ssh_port: int

    @property
    def docroot(self) -> str:
        return f"{self.path}/current/web"

    def under(self, home: str) -> str:
        """The document root relative to ``home``; ConfigError when it is outside."""
        home = home.rstrip("/")
        if not self.docroot.startswith(home + "/"):
            raise ConfigError(f"the deploy path {self.path} is not inside the account's home "
                              f"{home}", key="provision.path",
                              hint=f"a panel serves only what is under {home}: set "
                                   f"provision.path to e.g. {home}/{self.domain}")
        return self.docroot[len(home) + 1:]

    def info(self, ident: str, user: str) -> ServerInfo:
        return ServerInfo(id=ident, name=self.name, status="ready", ipv4=self.ssh_host,
                          ipv6=None, labels={}, server_type=f"site {self.domain} as {user}")


def panel_site(config: ProvisionConfig, site: Site, url: str) -> PanelSite:
    """Resolve the panel keys for ``site``; ``url`` is the panel's API URL."""
    domain = config.panel.domain or (site.hostnames[0] if site.hostnames else None)
    if not domain:
        raise ConfigError("the panel provider needs the site's domain", key="provision.panel",
                          hint="set provision.panel.domain, or the environment's url")
    host = config.panel.ssh_host or urllib.parse.urlsplit(url).hostname
    if not host:
        raise ConfigError(f"cannot tell the SSH host from the panel URL {url!r}",
                          key="provision.panel.ssh_host", hint="set provision.panel.ssh_host")
    return PanelSite(project=site.project, environment=site.environment, name=site.server_name,
                     domain=domain, path=posixpath.normpath(site.path), database=site.database,
                     ssh_host=host, ssh_port=site.ssh_port)


def need(environ: Mapping[str, str], name: str, hint: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise SecretError(f"{name} is not set", hint=hint)
    return value


def one_time_password() -> str:
    # Letters and digits only: CyberPanel's chpasswd line and input filter take them.
    return secrets.token_hex(24)


class Account(Protocol):
    """SSH as the site's user on the panel's server (see the module docstring)."""

    def key_logs_in(self, user: str) -> bool:
        """True when the deploy key logs in as ``user`` (read only)."""

    def install_key(self, user: str, password: str) -> None:
        """Log in as ``user`` with ``password`` and add the deploy key to authorized_keys."""

    def link_current(self, user: str, path: str) -> None:
        """Make ``<path>/current`` a link to an empty release (logged in with the key)."""


class SshAccount:
    """:class:`Account` over paramiko, with the host key pinned by FORGE_KNOWN_HOSTS."""

    def __init__(self, host: str, port: int, key: paramiko.PKey, public_line: str,
                 known_hosts: str | None, timeout: float = 15.0) -> None:
        self.host, self.port, self.key, self.public = host, port, key, public_line
        self.known_hosts, self.timeout = known_hosts, timeout

    def _client(self, user: str, *, password: str | None = None) -> paramiko.SSHClient:
        import tempfile

        if not self.known_hosts:
            raise SecretError("FORGE_KNOWN_HOSTS is not set; forge never trusts a host key on "
                              "first use", hint=f"pin the key of {self.host}:{self.port} (check "
                              "`ssh-keyscan -p PORT HOST` against the panel's console) and pass "
                              "it as FORGE_KNOWN_HOSTS")
        client = paramiko.SSHClient()
        with tempfile.NamedTemporaryFile("w", prefix="forge-known-hosts-") as f:
            f.write(self.known_hosts)
            f.flush()
            client.load_system_host_keys(f.name)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=user, timeout=self.timeout,
                           pkey=None if password else self.key, password=password,
                           allow_agent=False, look_for_keys=False, banner_timeout=self.timeout,
                           auth_timeout=self.timeout)
        except paramiko.AuthenticationException:
            raise
        except paramiko.BadHostKeyException:
            raise SecretError(f"the host key of {self.host}:{self.port} does not match "
                              "FORGE_KNOWN_HOSTS", hint="if the server's key changed on "
                              "purpose, pin the new one; otherwise do not connect") from None
        except (OSError, paramiko.SSHException) as e:
            if "not found in known_hosts" in str(e):
                raise SecretError(f"FORGE_KNOWN_HOSTS does not list {self.host}:{self.port}",
                                  hint="add its host key line ([host]:port type base64)"
                                  ) from None
            raise BootstrapError(f"cannot reach {user}@{self.host}:{self.port} over SSH "
                                 f"({e.__class__.__name__})",
                                 hint="check provision.panel.ssh_host and ssh_port") from None
        return client

    def key_logs_in(self, user: str) -> bool:
        try:
            self._client(user).close()
        except paramiko.AuthenticationException:
            return False
        return True

    def _run(self, client: paramiko.SSHClient, script: str, what: str) -> None:
        _, out, err = client.exec_command(script, timeout=self.timeout)
        if out.channel.recv_exit_status() != 0:
            raise BootstrapError(f"{what} failed: {err.read().decode(errors='replace').strip()}")

    def install_key(self, user: str, password: str) -> None:
        try:
            client = self._client(user, password=password)
        except paramiko.AuthenticationException:
            raise BootstrapError(f"the one-time password did not log in as {user}",
                                 hint="the server may refuse password logins over SSH "
                                      "(PasswordAuthentication no): add the deploy key to "
                                      f"/home/.../.ssh/authorized_keys of {user} by hand, "
                                      "then run provision again") from None
        with client:
            self._run(client, "umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && "
                      f"(grep -qxF {sh(self.public)} ~/.ssh/authorized_keys || "
                      f"printf '%s\\n' {sh(self.public)} >> ~/.ssh/authorized_keys)",
                      f"adding the deploy key for {user}")

    def link_current(self, user: str, path: str) -> None:
        with self._client(user) as client:
            self._run(client, link_current_script(path), f"linking {path}/current")


def link_current_script(path: str) -> str:
    """Make ``<path>/current`` a link to an empty release, unless something is there."""
    release = f"{path}/releases/{PLACEHOLDER}"
    return (f"mkdir -p {sh(release + '/web')} && "
            f"{{ [ -e {sh(path + '/current')} ] || [ -L {sh(path + '/current')} ] || "
            f"ln -s releases/{PLACEHOLDER} {sh(path + '/current')}; }}")
