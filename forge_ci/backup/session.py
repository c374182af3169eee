"""Everything a backup command opens, built explicitly from config and ``environ``.

``environ`` is the command's mapping of process environment variables, handed down
from the entry point. Keys come from ``FORGE_BACKUP_RECIPIENT`` (public: enough to
write) and ``FORGE_BACKUP_IDENTITY`` (private: needed to read); S3 settings from the
standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for any S3-compatible endpoint)
and forge.yml's ``backup.object_lock``, passed to the store as arguments. Nothing
here, nor in the stores, reads ``os.environ``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from forge_ci.backup.format.keys import (
    IDENTITY_ENV,
    RECIPIENT_ENV,
    Secret,
    X25519Identity,
    X25519Recipient,
    parse_identities,
    parse_recipients,
)
from forge_ci.backup.repo import Repository
from forge_ci.backup.take import Source
from forge_ci.config import EnvironmentConfig, LoadedConfig
from forge_ci.config.backup import BackupConfig
from forge_ci.errors import ConfigError
from forge_ci.remote import Host, LocalHost
from forge_ci.store import ObjectStore, open_store
from forge_ci.targets import target_root

_AWS = {"endpoint_url": "AWS_ENDPOINT_URL", "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN"}


@dataclass(frozen=True)
class Target:
    """The environment a command works on: its name and its parsed config."""

    environment: str
    config: EnvironmentConfig
    backup_config: BackupConfig
    loaded: LoadedConfig

    @property
    def root(self) -> str:
        return target_root(self.config, self.loaded.root)

    @property
    def site(self) -> str:
        return self.loaded.config.project


def target(loaded: LoadedConfig, environment: str) -> Target:
    config = loaded.environment(environment)
    if config.backup is None:
        raise ConfigError(f"environment {environment!r} has no backup section",
                          file=str(loaded.path), key=f"environments.{environment}",
                          hint="add backup: { store: s3://bucket/prefix, database: ... }")
    return Target(environment, config, config.backup, loaded)


def recipients(environ: Mapping[str, str]) -> list[X25519Recipient]:
    value = environ.get(RECIPIENT_ENV)
    return parse_recipients(value) if value else []


def identities(environ: Mapping[str, str]) -> list[X25519Identity]:
    value = environ.get(IDENTITY_ENV)
    return parse_identities(Secret(value)) if value else []


def s3_options(backup_config: BackupConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The S3 store's settings: endpoint, region and static keys from ``environ``
    (without keys, boto3's own credential chain applies: the web identity token the
    OIDC action wrote, a profile, an instance role), Object Lock from forge.yml."""
    opts: dict[str, Any] = {k: environ[v] for k, v in _AWS.items() if environ.get(v)}
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["region"] = region
    lock = backup_config.object_lock
    if lock is not None:
        opts |= {"retention_mode": lock.mode.upper(), "retention_days": lock.days}
    return opts


def store_for(t: Target, environ: Mapping[str, str]) -> ObjectStore:
    url = t.backup_config.store_url(t.loaded.root)
    opts = s3_options(t.backup_config, environ) if url.startswith("s3://") else {}
    try:
        store = open_store(url, **opts)
    except ValueError as e:
        raise ConfigError(str(e), file=str(t.loaded.path),
                          key=f"environments.{t.environment}.backup.store") from None
    check = getattr(store, "check", None)
    if callable(check):
        check()  # a missing bucket fails here, before any work
    return store


@contextlib.contextmanager
def repository(t: Target, environ: Mapping[str, str]) -> Iterator[Repository]:
    store = store_for(t, environ)
    try:
        yield Repository(store, t.site, t.environment, recipients=recipients(environ),
                         identities=identities(environ))
    finally:
        store.close()


@contextlib.contextmanager
def backup_host(t: Target, environ: Mapping[str, str]) -> Iterator[Host]:
    """The host holding the database and files: ``backup.host``, else the first."""
    if t.config.is_local:
        yield LocalHost()
        return
    hosts = t.config.hosts
    chosen = hosts[0]
    if t.backup_config.host is not None:
        match = [h for h in hosts if h.host == t.backup_config.host]
        if not match:
            raise ConfigError(f"backup.host {t.backup_config.host!r} is not one of the "
                              "environment's hosts", file=str(t.loaded.path),
                              key=f"environments.{t.environment}.backup.host",
                              hint=f"use one of: {', '.join(h.host for h in hosts)}")
        chosen = match[0]
    from forge_ci.remote.ssh import connector

    host = connector(environ.get("FORGE_SSH_KEY"), environ.get("FORGE_KNOWN_HOSTS"))(
        chosen.host, chosen.port, chosen.user)
    try:
        yield host
    finally:
        host.close()


def source(t: Target, host: Host) -> Source:
    return Source(host=host, root=t.root, site=t.site, environment=t.environment,
                  hostnames=(host.name,))
