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
    they reach over SSH rather than one they create."""
    if config.provider == "hetzner":
        from forge_ci.provision.hetzner import HetznerProvider

        return HetznerProvider.from_env(config, environ, policy, log)
    if config.provider == "ssh":
        from forge_ci.provision.ssh import SshProvider

        return SshProvider.from_env(config, site, hosts, environ, log)
    raise AssertionError(f"unknown provider {config.provider!r}")  # config validation forbids it
