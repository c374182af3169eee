"""forge.yml as frozen data. Parsed once, at the edge, by :mod:`forge_ci.config.loader`.

Sections owned by a capability live beside this module (``backup.py``,
``provision.py``) so each stays small; this module ties them together.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from forge_ci.config.backup import BackupConfig, DatabaseConfig
from forge_ci.config.provision import HttpsConfig, ProvisionConfig
from forge_ci.config.watch import DrillConfig, MonitorConfig
from forge_ci.notify.config import NotifyTarget


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def relative_path(value: str, what: str) -> str:
    """A clean path inside a tree: no absolute paths, no ``..``, no empty parts."""
    if not value or value.startswith("/") or "\0" in value or "\n" in value:
        raise ValueError(f"{what} must be a relative path inside the site, got {value!r}")
    norm = posixpath.normpath(value)
    if norm == "." or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{what} must stay inside the site, got {value!r}")
    return norm


class BuildConfig(Frozen):
    composer: bool = False  # composer install --no-dev --optimize-autoloader
    commands: tuple[str, ...] = ()
    exclude: tuple[str, ...] = (".git", "node_modules", "tests")
    # Variables passed to composer and the build commands beyond the safe defaults
    # (PATH, HOME, locale, CI context): e.g. NPM_TOKEN, COMPOSER_AUTH.
    env: tuple[str, ...] = ()

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ENV_KEY.match(name):
                raise ValueError(f"build.env: {name!r} is not a variable name")
            if name in FORGE_SECRETS or name.startswith(FORGE_SECRET_PREFIXES):
                raise ValueError(f"build.env: {name} is one of forge's own secrets; a build "
                                 "never needs it")
        return value


# forge's own credentials: never handed to a build, whatever build.env says.
FORGE_SECRETS = frozenset({"FORGE_SSH_KEY", "FORGE_KNOWN_HOSTS", "FORGE_BACKUP_IDENTITY",
                           "FORGE_BACKUP_SIGNING_KEY", "HCLOUD_TOKEN", "GITHUB_TOKEN"})
FORGE_SECRET_PREFIXES = ("AWS_", "CYBERPANEL_", "CPANEL_", "FORGE_", "ACTIONS_")


class HostConfig(Frozen):
    host: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: str = Field("deploy", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    # Where this host's own web server answers the site, as the host itself reaches
    # it (default 127.0.0.1): the health checks of a multi-host environment run on
    # each host with curl connected there, bypassing any load balancer.
    check_address: str | None = Field(
        None, pattern=r"^([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])$")

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class HealthCheck(Frozen):
    url: str = Field(pattern=r"^https?://")
    status: Annotated[int, Field(ge=100, le=599)] = 200
    contains: str | None = None


class Hooks(Frozen):
    before_switch: tuple[str, ...] = ()
    after_switch: tuple[str, ...] = ()
    # Run in the live release (``current``) of a sync's target, after its import.
    after_sync: tuple[str, ...] = ()
    # Run once, on the first host, in the new release's directory: before the switch
    # (default) or right after it. ``maintenance`` puts WordPress's .maintenance file
    # up for as long as they run (forge removes it, even after a killed run).
    migrate: tuple[str, ...] = ()
    migrate_at: Literal["before_switch", "after_switch"] = "before_switch"
    maintenance: bool = False


class PhpConfig(Frozen):
    """How PHP is made to see a new release after the switch.

    ``none``: nginx passes ``$realpath_root`` so every release has its own paths
    and opcache keys; nothing to do. ``command``: run ``reload_command`` on each
    host (for example ``sudo systemctl reload php8.2-fpm``). ``opcache-reset``:
    reset opcache (and with it every worker's realpath cache) inside the FPM pool
    listening on ``fpm_socket``, through FastCGI from each host
    (:mod:`forge_ci.deploy.php_refresh`).
    """

    refresh: Literal["none", "command", "opcache-reset"] = "none"
    reload_command: str | None = None
    # No default: the path names the pool (Debian 12: /run/php/php8.2-fpm.sock,
    # Ubuntu 24.04: /run/php/php8.3-fpm.sock, forge's provisioning: its own pool),
    # and resetting some other pool would leave the site's opcache stale.
    fpm_socket: str | None = None

    @field_validator("fpm_socket")
    @classmethod
    def _socket_path(cls, value: str | None) -> str | None:
        return None if value is None else socket_path(value)

    @model_validator(mode="after")
    def _command_given(self) -> PhpConfig:
        if self.refresh == "command" and not self.reload_command:
            raise ValueError("refresh: command needs reload_command")
        if self.refresh == "opcache-reset" and not self.fpm_socket:
            raise ValueError(
                "refresh: opcache-reset needs fpm_socket, the PHP-FPM socket of the site's "
                "pool: the path after 'unix:' in its nginx fastcgi_pass (Debian 12's "
                "default pool: /run/php/php8.2-fpm.sock)")
        if self.fpm_socket and self.refresh != "opcache-reset":
            raise ValueError("fpm_socket is only used by refresh: opcache-reset")
        return self


# sun_path holds 108 bytes, the terminating NUL included.
_SUN_PATH_MAX = 107


def socket_path(value: str) -> str:
    """An absolute, clean path of a unix socket (what nginx writes after ``unix:``)."""
    if value.startswith("unix:"):
        raise ValueError("fpm_socket is a path: leave out the 'unix:' prefix nginx uses")
    if not value.startswith("/"):
        raise ValueError("fpm_socket must be the absolute path of PHP-FPM's unix socket "
                         "(a TCP address like 127.0.0.1:9000 is not supported)")
    clean = posixpath.normpath(value) == value and "//" not in value and value != "/"
    if not clean or any(c in value for c in "\0\n\r\t"):
        raise ValueError("fpm_socket must be a plain absolute path to a file (no '..', "
                         "'//', control characters or trailing '/')")
    if len(value.encode()) > _SUN_PATH_MAX:
        raise ValueError(f"fpm_socket is longer than the {_SUN_PATH_MAX} bytes a unix "
                         "socket path may have")
    return value


class PreviewConfig(Frozen):
    """A second server block that serves ``<path>/<link>/web``: the new release is
    checked there before visitors see it. ``url`` replaces the site URL in checks."""

    url: str = Field(pattern=r"^https?://")
    link: str = Field("next", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # True: the preview listens on the server's loopback (as provisioning sets it
    # up) and each host checks its own preview with curl over SSH.
    on_host: bool = False

    @field_validator("link")
    @classmethod
    def _not_a_layout_name(cls, value: str) -> str:
        # The link is switched before any check: naming the live link (or a directory
        # forge keeps) would switch visitors, or clobber state, before the health gate.
        if value in RESERVED_LINKS or value.endswith(".forge-tmp"):
            raise ValueError(f"preview.link {value!r} is a name forge uses in the site "
                             f"directory; pick another (reserved: {', '.join(RESERVED_LINKS)})")
        return value


# Names directly under an environment's path that forge itself owns.
RESERVED_LINKS = ("current", "releases", "shared", ".forge")


class SyncConfig(Frozen):
    """How ``forge-ci sync FROM TO`` writes into this environment (TO's section applies).

    ``replace``: extra ``[from, to]`` pairs after the URL pairs sync derives itself.
    ``exclude_tables``: tables (full names) neither dumped nor touched in TO.
    ``anonymize``: scrub personal data on the stream (see :mod:`forge_ci.sync.anonymize`).
    ``table_prefix``: WordPress's ``$table_prefix``. ``uploads``: under ``shared/``.
    """

    replace: tuple[tuple[str, str], ...] = ()
    exclude_tables: tuple[str, ...] = ()
    anonymize: bool = True
    table_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")] = "wp_"
    uploads: str = "web/app/uploads"

    @field_validator("exclude_tables")
    @classmethod
    def _table_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9_$-]{1,64}$", name):
                raise ValueError(f"exclude_tables: {name!r} is not a plain table name")
        return value

    @field_validator("uploads")
    @classmethod
    def _uploads_path(cls, value: str) -> str:
        return relative_path(value, "sync.uploads")


class RollingConfig(Frozen):
    """``strategy: rolling``: how many hosts switch (and are checked) at a time."""

    batch: Annotated[int, Field(ge=1, le=1000)] = 1


class EnvironmentConfig(Frozen):
    url: str | None = Field(None, pattern=r"^https?://")
    hosts: tuple[HostConfig, ...] = ()
    path: str = Field(min_length=1)
    keep_releases: Annotated[int, Field(ge=1, le=100)] = 5
    shared: tuple[str, ...] = ()
    dotenv: dict[str, SecretStr] = Field(default_factory=dict)
    hooks: Hooks = Hooks()
    php: PhpConfig = PhpConfig()
    health: tuple[HealthCheck, ...] = ()
    # The release marker (web/forge-release.php) proves PHP serves the new code.
    marker: bool = True
    health_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    preview: PreviewConfig | None = None
    lock_wait: Annotated[float, Field(ge=0, le=3600)] = 0.0
    backup: BackupConfig | None = None
    # None: the top-level notify list; [] silences this environment.
    notify: tuple[NotifyTarget, ...] | None = None
    monitor: MonitorConfig = MonitorConfig()
    drill: DrillConfig = DrillConfig()
    # together: prepare all, switch all, all back on failure. rolling: prepare all,
    # then switch and check ``rolling.batch`` hosts at a time.
    strategy: Literal["together", "rolling"] = "together"
    rolling: RollingConfig | None = None
    # Provisioning's ACME certificate; absent: on (letsencrypt) when url is https://.
    https: HttpsConfig | None = None
    # Where the site's database lives (backup, sync, deploy snapshots).
    database: DatabaseConfig | None = None
    sync: SyncConfig = SyncConfig()
    # None: protected when the environment is named production (see is_protected).
    protected: bool | None = None

    @property
    def is_local(self) -> bool:
        return not self.hosts

    @property
    def site_database(self) -> DatabaseConfig | None:
        """``database``, else the older ``backup.database``."""
        if self.database is not None:
            return self.database
        return self.backup.database if self.backup is not None else None

    def is_protected(self, environment: str) -> bool:
        """Writes into it (sync) need ``--confirm <name>``; default: named production."""
        return self.protected if self.protected is not None else environment == "production"

    @field_validator("shared")
    @classmethod
    def _shared_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(relative_path(v, "a shared path") for v in value)

    @field_validator("dotenv")
    @classmethod
    def _dotenv_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key in value:
            if not _ENV_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid .env variable name")
        return value

    @model_validator(mode="after")
    def _remote_path_absolute(self) -> EnvironmentConfig:
        if self.hosts and not self.path.startswith("/"):
            raise ValueError("path must be absolute when hosts are given")
        if self.preview and not self.url:
            raise ValueError("preview needs url: checks are moved from url to preview.url")
        if self.rolling is not None and self.strategy != "rolling":
            raise ValueError("rolling: settings need strategy: rolling")
        if self.strategy == "rolling" and len(self.hosts) < 2:
            raise ValueError("strategy: rolling needs at least two hosts (with one, "
                             "leave strategy out: together is the default)")
        return self


class ForgeConfig(Frozen):
    version: Literal[1]
    project: str = Field(pattern=_NAME.pattern)
    build: BuildConfig = BuildConfig()
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
    provision: ProvisionConfig | None = None
    notify: tuple[NotifyTarget, ...] = ()

    def notify_targets(self, environment: str) -> tuple[NotifyTarget, ...]:
        """Where ``environment``'s events go: its own ``notify:`` or the top-level one."""
        own = self.environments[environment].notify
        return self.notify if own is None else own

    @field_validator("environments")
    @classmethod
    def _env_names(cls, value: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"environment name {name!r} must be lowercase letters, digits, -")
        return value
