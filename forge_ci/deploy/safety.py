"""The deploy's safety net: database snapshots in the environment's backup store.

:class:`BackupSnapshots` is the :class:`~forge_ci.deploy.execute.DatabaseSnapshots`
a deploy uses when ``backup:`` is configured. A snapshot taken before a switch
(``backup.before_deploy``) is an ordinary snapshot of the backup format: encrypted
to ``FORGE_BACKUP_RECIPIENT``, signed with ``FORGE_BACKUP_SIGNING_KEY`` (so trusted
when its key is pinned in ``backup.signers``), seen by ``snapshots``, ``verify`` and
``restore``, and kept or forgotten by ``prune``'s retention like any other. It holds
the database only: its ``paths`` are empty, so it never stands in for a file backup.

A restore goes through :func:`forge_ci.backup.restore.run_restore`: the whole dump
authenticates before anything is imported. The deploy (or rollback) that runs it
already holds every host's deploy lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forge_ci.config import EnvironmentConfig, LoadedConfig
from forge_ci.config.backup import BackupConfig, DatabaseConfig
from forge_ci.errors import ConfigError
from forge_ci.remote import Host

if TYPE_CHECKING:
    from forge_ci.backup import session

# The backup modules (and the S3 client behind them) load only when a snapshot is
# taken or restored: a deploy without ``backup.before_deploy`` never pays for them.


def database_config(config: EnvironmentConfig) -> DatabaseConfig | None:
    """The environment's database: ``environments.<name>.database`` where forge.yml
    has that key, else ``backup.database``."""
    own: DatabaseConfig | None = getattr(config, "database", None)
    if own is not None:
        return own
    return config.backup.database if config.backup else None


def snapshot_config(config: EnvironmentConfig) -> BackupConfig | None:
    """``backup:`` narrowed to the database (no paths): what a deploy's snapshot holds."""
    if config.backup is None:
        return None
    return config.backup.model_copy(update={"paths": (), "database": database_config(config)})


@dataclass(frozen=True)
class BackupSnapshots:
    """Snapshots to and restores from ``environment``'s backup store."""

    loaded: LoadedConfig
    environment: str
    environ: Mapping[str, str]
    log: Callable[[str], None]

    def _target(self) -> tuple[session.Target, BackupConfig]:
        from forge_ci.backup import session

        t = session.target(self.loaded, self.environment)
        cfg = snapshot_config(t.config)
        if cfg is None or cfg.database is None:
            raise ConfigError(f"environment {self.environment!r} names no database to "
                              "snapshot", file=str(self.loaded.path),
                              key=f"environments.{self.environment}.backup.database",
                              hint="add backup.database (name, user, password)")
        return t, cfg

    def take(self, host: Host, release: str) -> str:
        from forge_ci.backup import session
        from forge_ci.backup.take import take_snapshot

        t, cfg = self._target()
        self.log(f"{host.name}: snapshotting database {cfg.database.name if cfg.database else ''}"
                 f" before {release} goes live")
        with session.repository(t, self.environ) as repo:
            report = take_snapshot(repo, session.source(t, host), cfg, log=self.log)
        assert report.snapshot_id is not None  # not a dry run
        return report.snapshot_id

    def restore(self, host: Host, snapshot: str) -> None:
        from forge_ci.backup import session
        from forge_ci.backup.restore import plan_restore, run_restore

        t, cfg = self._target()
        with session.repository(t, self.environ) as repo:
            loaded = repo.pick(snapshot)
            plan = plan_restore(loaded.ref, loaded.manifest, cfg, t.root, only="database")
            run_restore(plan, repo, host, cfg, yes=True, log=self.log)


def for_environment(loaded: LoadedConfig, environment: str, environ: Mapping[str, str],
                    log: Callable[[str], None]) -> BackupSnapshots | None:
    """The environment's snapshots, or None without a ``backup:`` section. Nothing is
    opened until a step needs it."""
    if loaded.environment(environment).backup is None:
        return None
    return BackupSnapshots(loaded, environment, environ, log)
