"""Everything a backup command opens, built explicitly from config and ``environ``.

``environ`` is the command's mapping of process environment variables, handed down
from the entry point. Keys come from ``FORGE_BACKUP_RECIPIENT`` (public: enough to
write), ``FORGE_BACKUP_SIGNING_KEY`` (private: signs what the backup writes) and
``FORGE_BACKUP_IDENTITY`` (private: needed to read); the trusted signers from
forge.yml's ``backup.signers``; S3 settings from the
standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for any S3-compatible endpoint)
and forge.yml's ``backup.object_lock``, passed to the store as arguments. Nothing
here, nor in the stores, reads ``os.environ``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
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
from forge_ci.backup.signing import SIGNING_KEY_ENV, SigningKey, parse_signing_key
from forge_ci.backup.take import Source
from forge_ci.config import EnvironmentConfig, LoadedConfig
from forge_ci.config.backup import BackupConfig
from forge_ci.errors import ConfigError
from forge_ci.remote import Host, LocalHost
from forge_ci.store import ObjectStore, open_store
from forge_ci.store.credentials import WebIdentity
from forge_ci.targets import open_hosts, target_root

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
    # The site's database lives in `database` (sync and deploy snapshots read it too);
    # `backup.database` keeps working where `database` is not given.
    backup = config.backup.model_copy(update={"database": config.site_database})
    return Target(environment, config, backup, loaded)


def recipients(environ: Mapping[str, str]) -> list[X25519Recipient]:
    value = environ.get(RECIPIENT_ENV)
    return parse_recipients(value) if value else []


def identities(environ: Mapping[str, str]) -> list[X25519Identity]:
    value = environ.get(IDENTITY_ENV)
    return parse_identities(Secret(value)) if value else []


def signing_key(environ: Mapping[str, str]) -> SigningKey | None:
    value = environ.get(SIGNING_KEY_ENV)
    return parse_signing_key(Secret(value)) if value and value.strip() else None


def unauthenticated_warning(t: Target) -> str | None:
    """The loud warning every backup command gives while no signers are pinned."""
    if t.backup_config.signers:
        return None
    return (f"environments.{t.environment}.backup.signers is not set: snapshots are NOT "
            "authenticated. Anyone who holds FORGE_BACKUP_RECIPIENT and can write to the "
            "store can plant a snapshot that restore accepts. Run `forge-ci keygen "
            "--signing`, put the public key in backup.signers and the private key in "
            f"{SIGNING_KEY_ENV}")


def s3_options(backup_config: BackupConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The S3 store's settings: endpoint, region and static keys from ``environ``;
    without keys, the web identity token file the OIDC action wrote and the role to
    assume with it (at ``AWS_ENDPOINT_URL_STS``, else ``AWS_ENDPOINT_URL``, else AWS's
    STS); without either, boto3's own credential chain applies (a profile, an instance
    role). Object Lock from forge.yml."""
    opts: dict[str, Any] = {k: environ[v] for k, v in _AWS.items() if environ.get(v)}
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["region"] = region
    token_file, role = environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"), environ.get("AWS_ROLE_ARN")
    if token_file and role and not environ.get("AWS_ACCESS_KEY_ID"):
        opts["web_identity"] = WebIdentity(
            token_file, role, session_name=environ.get("AWS_ROLE_SESSION_NAME") or None,
            sts_endpoint=environ.get("AWS_ENDPOINT_URL_STS") or environ.get("AWS_ENDPOINT_URL")
            or None)
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
def repository(t: Target, environ: Mapping[str, str], *,
               allow_unsigned: bool = False) -> Iterator[Repository]:
    # Keys first: a malformed secret fails before any store request.
    public, private = recipients(environ), identities(environ)
    signer = signing_key(environ)
    store = store_for(t, environ)
    try:
        yield Repository(store, t.site, t.environment, recipients=public, identities=private,
                         signing_key=signer, signers=t.backup_config.signer_keys(),
                         allow_unsigned=allow_unsigned)
    finally:
        store.close()


def _backup_index(t: Target) -> int:
    """Which of the environment's hosts holds the data: ``backup.host``, else the first."""
    hosts = t.config.hosts
    if t.backup_config.host is None:
        return 0
    for i, h in enumerate(hosts):
        if h.host == t.backup_config.host:
            return i
    raise ConfigError(f"backup.host {t.backup_config.host!r} is not one of the "
                      "environment's hosts", file=str(t.loaded.path),
                      key=f"environments.{t.environment}.backup.host",
                      hint=f"use one of: {', '.join(h.host for h in hosts)}")


@contextlib.contextmanager
def backup_host(t: Target, environ: Mapping[str, str]) -> Iterator[Host]:
    """The host holding the database and files: ``backup.host``, else the first."""
    if t.config.is_local:
        yield LocalHost()
        return
    chosen = t.config.hosts[_backup_index(t)]
    from forge_ci.remote.ssh import connector

    host = connector(environ.get("FORGE_SSH_KEY"), environ.get("FORGE_KNOWN_HOSTS"))(
        chosen.host, chosen.port, chosen.user)
    try:
        yield host
    finally:
        host.close()


@contextlib.contextmanager
def restore_host(t: Target, environ: Mapping[str, str], *, lock: bool,
                 log: Callable[[str], None] = lambda _m: None) -> Iterator[Host]:
    """The backup host; with ``lock``, while holding the deploy lock on *every* host of
    the environment (the one deploy takes: ``lock_wait`` applies), so a deploy or
    another restore waits or fails instead of interleaving with this one."""
    if not lock:
        with backup_host(t, environ) as host:
            yield host
        return
    from forge_ci.deploy.lock import Lock, owner_info
    from forge_ci.deploy.releases import Layout

    index = _backup_index(t)
    hosts = open_hosts(t.config, environ)
    try:
        with contextlib.ExitStack() as stack:
            for host in hosts:
                log(f"{host.name}: taking the deploy lock")
                stack.enter_context(Lock(host, Layout(t.root), owner_info(environ, "restore"),
                                         t.config.lock_wait))
            yield hosts[index]
    finally:
        for host in hosts:
            host.close()


def source(t: Target, host: Host) -> Source:
    return Source(host=host, root=t.root, site=t.site, environment=t.environment,
                  hostnames=(host.name,))
