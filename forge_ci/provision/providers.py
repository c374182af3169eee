"""Which :class:`~forge_ci.provision.base.Provider` a ``provision:`` section names.

Adding a host (a CyberPanel API, a cPanel-style account) means one package
beside ``hetzner/`` and one branch here; deploy and backup never change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from forge_ci.config.models import HostConfig
from forge_ci.config.provision import ProvisionConfig
from forge_ci.provision.base import Provider
from forge_ci.provision.policy import ProvisionPolicy
from forge_ci.provision.site import Site


def make_provider(config: ProvisionConfig, environ: Mapping[str, str], policy: ProvisionPolicy,
                  log: Callable[[str], None], *, site: Site,
                  hosts: tuple[HostConfig, ...] = ()) -> Provider[Any]:
    """Build the provider from config and its secrets in ``environ`` (SecretError if missing).

    ``site`` and ``hosts`` (the environment's) serve providers that set up a server
    they reach over SSH, or a site on a control panel, rather than one they create."""
    if config.provider == "hetzner":
        from forge_ci.provision.hetzner import HetznerProvider

        return HetznerProvider.from_env(config, environ, policy, log)
    if config.provider == "ssh":
        from forge_ci.provision.ssh import SshProvider

        return SshProvider.from_env(config, site, hosts, environ, log)
    if config.provider in ("cyberpanel", "cpanel"):
        return _panel(config, environ, policy, log, site)
    from forge_ci.plugins import find  # config validation saw a plugin of this name

    plugin = find("forge_ci.providers", config.provider)
    if plugin is None:
        raise AssertionError(f"unknown provider {config.provider!r}")  # config forbids it
    provider: Provider[Any] = plugin.from_env(config, environ, policy, log, site=site)
    return provider


def _panel(config: ProvisionConfig, environ: Mapping[str, str], policy: ProvisionPolicy,
           log: Callable[[str], None], site: Site) -> Provider[Any]:
    from forge_ci.provision.hostkeys import public_line
    from forge_ci.provision.panel import SshAccount, need, panel_site
    from forge_ci.remote.ssh import parse_private_key

    url_var = "CYBERPANEL_URL" if config.provider == "cyberpanel" else "CPANEL_URL"
    where = panel_site(config, site, need(environ, url_var, "the panel's https:// address"))
    key = parse_private_key(need(environ, "FORGE_SSH_KEY", "the deploy key (private half)"))
    account = SshAccount(where.ssh_host, where.ssh_port, key, public_line(key),
                         environ.get("FORGE_KNOWN_HOSTS") or None)
    if config.provider == "cyberpanel":
        from forge_ci.provision.cyberpanel.provider import CyberPanelProvider

        # Without a configured user forge cannot know the site's Linux user before
        # asking CyberPanel, which only a write (ChangeLinuxUserPassword) answers.
        known = config.deploy_user or (site.deploy_user if site.deploy_user != "deploy" else None)
        return CyberPanelProvider.from_env(config, environ, policy, log, site=where,
                                           account=account, deploy_user=known)
    from forge_ci.provision.cpanel.provider import CpanelProvider

    return CpanelProvider.from_env(config, environ, policy, log, site=where, account=account)
