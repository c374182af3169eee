"""The ``backup:`` section of an environment (owned by the backup package).

::

    backup:
      store: s3://bucket/prefix            # or file:///abs/path, or file:rel/path (from forge.yml)
      host: 203.0.113.10                   # which of the environment's hosts (default: the first)
      database: { name: example, user: example, password: "${DB_PASSWORD}" }
      paths: ["shared/web/app/uploads"]    # relative to the environment's path (the default)
      retention: { keep_daily: 14, keep_weekly: 8, timezone: Europe/Berlin }
      object_lock: { mode: governance, days: 30 }   # S3 buckets with Object Lock enabled
      signers: ["forge-sign-ed25519:..."]  # public keys whose snapshots are trusted
      before_deploy: true                  # snapshot the database in every deploy

Secrets never live here: the database password comes from ``${VAR}``; keys and S3
credentials come from the environment (``FORGE_BACKUP_RECIPIENT``,
``FORGE_BACKUP_SIGNING_KEY``, ``AWS_*``).

``paths`` never name what deploy owns (``current``, ``releases``, ``.forge``): a
restore replaces these paths, and must never replace code.
"""

from __future__ import annotations

import posixpath
import re
import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from forge_ci.backup.signing import SignerKey

DEFAULT_PATHS = ("shared/web/app/uploads",)
# What deploy owns at the top of the environment's path: never backed up, never restored.
DEPLOY_OWNED = ("current", "releases", ".forge")
_S3 = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseConfig(_Frozen):
    """The database dumped on the backup host (``mariadb-dump``, else ``mysqldump``).

    ``host`` and ``port`` are as seen from that host: ``localhost`` uses the socket.
    """

    # Names forge quotes into SQL (CREATE DATABASE for drills): keep them plain.
    name: str = Field(pattern=r"^[A-Za-z0-9_$-]{1,64}$")
    user: str = Field(min_length=1, max_length=80)
    password: SecretStr
    host: str = Field("localhost", min_length=1, pattern=r"^[^\s\x00]+$")
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class Retention(_Frozen):
    """restic's ``forget`` policy. Buckets (hour, day, ISO week, month, year) are cut
    in ``timezone`` (an IANA name), so "daily" means the site's days, not UTC's."""

    keep_last: Annotated[int, Field(ge=1)] | None = None
    keep_hourly: Annotated[int, Field(ge=1)] | None = None
    keep_daily: Annotated[int, Field(ge=1)] | None = None
    keep_weekly: Annotated[int, Field(ge=1)] | None = None
    keep_monthly: Annotated[int, Field(ge=1)] | None = None
    keep_yearly: Annotated[int, Field(ge=1)] | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as "
                             "'UTC' or 'Europe/Berlin'") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        if all(c is None for c in self.counts().values()):
            raise ValueError("an empty retention policy would delete every snapshot; "
                             "set at least one keep_* count")
        return self

    def counts(self) -> dict[str, int | None]:
        """The six counts by restic's names: last, hourly, daily, weekly, monthly, yearly."""
        return {"last": self.keep_last, "hourly": self.keep_hourly, "daily": self.keep_daily,
                "weekly": self.keep_weekly, "monthly": self.keep_monthly,
                "yearly": self.keep_yearly}


class ObjectLock(_Frozen):
    """S3 Object Lock retention put on every object written (the bucket must have
    Object Lock enabled). Locked objects survive a leaked key; prune's deletes only
    hide them until ``days`` have passed."""

    mode: Literal["governance", "compliance"] = "governance"
    days: Annotated[int, Field(ge=1, le=36500)]


class BackupConfig(_Frozen):
    store: str
    host: str | None = None
    database: DatabaseConfig | None = None
    paths: tuple[str, ...] = DEFAULT_PATHS
    retention: Retention | None = None
    object_lock: ObjectLock | None = None
    signers: tuple[str, ...] = ()
    # A database-only snapshot inside every deploy's lock, before the switch.
    before_deploy: bool = False

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not _S3.match(value):
                raise ValueError("store must look like s3://bucket or s3://bucket/prefix")
            prefix = value[5:].rstrip("/").partition("/")[2]
            if prefix and not _PREFIX.match(prefix):
                raise ValueError("an s3:// prefix is /-separated names of letters, digits, "
                                 "'.', '_' and '-' (not starting with '.')")
            return value.rstrip("/")
        if value.startswith("file://"):
            if not value.startswith("file:///"):
                raise ValueError("file:// stores need an absolute path (file:///srv/backups); "
                                 "write file:backups for a path relative to forge.yml")
            return value.rstrip("/") if value != "file:///" else value
        if value.startswith("file:") and len(value) > 5:
            _relative(unquote(value[5:]), "a relative file: store")
            return value
        scheme = value.partition("://")[0]
        if "://" in value and scheme.isidentifier():
            from forge_ci.plugins import names  # metadata only: a plugin loads when used

            if scheme in names("forge_ci.stores"):
                return value
        raise ValueError("store must be s3://bucket/prefix, file:///abs/path or file:rel/path "
                         "(or a scheme an installed forge_ci.stores plugin provides)")

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        clean = tuple(_relative(v, "a backup path") for v in value)
        for a in clean:
            for b in clean:
                if a != b and (b + "/").startswith(a + "/"):
                    raise ValueError(f"backup paths overlap: {b!r} is inside {a!r}")
        if len(set(clean)) != len(clean):
            raise ValueError("a backup path is listed twice")
        for path in clean:
            if path.split("/")[0] in DEPLOY_OWNED:
                raise ValueError(f"backup path {path!r} is deploy's ({', '.join(DEPLOY_OWNED)} "
                                 "are never backed up or restored); back up shared/... instead")
        return clean

    @field_validator("signers")
    @classmethod
    def _signers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            return value
        # Loaded here, not at import: only a forge.yml that pins signers needs it.
        from forge_ci.backup.signing import SignerKey

        keys = []
        for text in value:
            try:
                keys.append(SignerKey.from_string(text))
            except ValueError as e:
                raise ValueError(str(e)) from None
        if len(set(keys)) != len(keys):
            raise ValueError("a signer is listed twice")
        return value

    def signer_keys(self) -> tuple[SignerKey, ...]:
        """The pinned public keys whose snapshots are trusted (empty: not configured)."""
        from forge_ci.backup.signing import SignerKey

        return tuple(SignerKey.from_string(s) for s in self.signers)

    @model_validator(mode="after")
    def _something(self) -> BackupConfig:
        if self.database is None and not self.paths:
            raise ValueError("nothing to back up: give a database or paths")
        if self.object_lock is not None and not self.store.startswith("s3://"):
            raise ValueError("object_lock needs an s3:// store")
        return self

    def store_url(self, config_dir: Path) -> str:
        """The store's URL with ``file:rel`` made absolute against forge.yml's folder."""
        if self.store.startswith("file:") and not self.store.startswith("file://"):
            path = (config_dir / unquote(self.store[5:])).resolve()
            return "file://" + quote(str(path))
        return self.store


def _relative(value: str, what: str) -> str:
    if not value or value.startswith("/") or "\0" in value or "\n" in value:
        raise ValueError(f"{what} must be relative to the environment's path, got {value!r}")
    norm = posixpath.normpath(value)
    if norm in (".", "..") or norm.startswith("../"):
        raise ValueError(f"{what} must stay inside the environment's path, got {value!r}")
    return norm
