"""Targets: where a release goes. See :mod:`forge_ci.remote.base` for the contract."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from forge_ci.config import EnvironmentConfig
from forge_ci.remote.base import Host, Process, Result, sh
from forge_ci.remote.local import LocalHost


def target_root(env: EnvironmentConfig, config_dir: Path) -> str:
    """The environment's ``path``: absolute on servers, relative to forge.yml locally."""
    if env.is_local:
        return str((config_dir / env.path).resolve())
    return env.path.rstrip("/") or "/"


def open_hosts(env: EnvironmentConfig, secrets: Mapping[str, str]) -> list[Host]:
    """Connect to every host of ``env`` (or the local one); fail before changing anything."""
    if env.is_local:
        return [LocalHost()]
    from forge_ci.remote.ssh import connector

    open_host = connector(secrets.get("FORGE_SSH_KEY"), secrets.get("FORGE_KNOWN_HOSTS"))
    hosts: list[Host] = []
    try:
        for h in env.hosts:
            hosts.append(open_host(h.host, h.port, h.user))
    except BaseException:
        for opened in hosts:
            opened.close()
        raise
    return hosts


__all__ = ["Host", "LocalHost", "Process", "Result", "open_hosts", "sh", "target_root"]
