"""Where an environment's releases go: its hosts and its path, from forge.yml.

The remote seam knows nothing of forge.yml; this is where config meets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from forge_ci.config import EnvironmentConfig
from forge_ci.remote import Host, LocalHost


def target_root(config: EnvironmentConfig, config_dir: Path) -> str:
    """The environment's ``path``: absolute on servers, relative to forge.yml locally."""
    if config.is_local:
        return str((config_dir / config.path).resolve())
    return config.path.rstrip("/") or "/"


def open_hosts(config: EnvironmentConfig, secrets: Mapping[str, str]) -> list[Host]:
    """Connect to every host of the environment (or the local one); fail before
    changing anything."""
    if config.is_local:
        return [LocalHost()]
    from forge_ci.remote.ssh import connector

    open_host = connector(secrets.get("FORGE_SSH_KEY"), secrets.get("FORGE_KNOWN_HOSTS"))
    hosts: list[Host] = []
    try:
        for h in config.hosts:
            hosts.append(open_host(h.host, h.port, h.user))
    except BaseException:
        for opened in hosts:
            opened.close()
        raise
    return hosts
