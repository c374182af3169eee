"""The one error tree of forge_ci.

Every failure a user can act on is a leaf of :class:`ForgeError`. Library errors
(paramiko, botocore, hcloud, pydantic, yaml) are translated into these where they
enter the package; the CLI's single top-level handler maps them to exit codes and
``::error::`` lines. Anything else reaching the handler is a bug and gets a
traceback.

::

    ForgeError                         exit 1 unless a subclass says otherwise
    ├── UsageError                     exit 2  bad command line
    ├── ConfigError                    exit 2  forge.yml invalid, ${VAR} missing
    ├── SecretError                    exit 2  FORGE_* secret missing or malformed
    ├── ConnectError                   exit 1  host unreachable, auth refused
    │   └── HostKeyError               exit 1  unknown or changed host key
    ├── RemoteCommandError             exit 1  a command on a target failed
    ├── LockedError                    exit 1  another run holds the lock
    ├── BuildError                     exit 1  composer / build command failed
    ├── ArtifactError                  exit 1  artifact missing, corrupt or hostile
    ├── DeployFailed                   exit 1  failed before the switch: nothing changed
    ├── RolledBack                     exit 3  failed after the switch, previous release back
    ├── RollbackFailed                 exit 4  failed and could not restore: act now
    ├── HealthError                    exit 1  health checks failed (health command)
    ├── BackupError / StoreError       exit 1  (backup package adds leaves)
    ├── SyncError                      exit 1  a sync cannot go on (unreadable dump, refused)
    └── ProvisionError                 exit 1  (provision package adds leaves)

Messages never contain secret values: callers pass names, paths and hosts only.
"""

from __future__ import annotations


class ExitCode:
    """The exit codes documented in the README's table."""

    OK = 0
    FAILED = 1  # failed, the live site and stored data are as they were
    USAGE = 2  # bad config or command line; nothing was touched
    ROLLED_BACK = 3  # failed after the switch; the previous release is live again
    ROLLBACK_FAILED = 4  # failed and the automatic rollback failed too: look now
    BUG = 70  # an unexpected error: a bug in forge_ci


class ForgeError(Exception):
    """Base of every error a user can act on.

    ``message`` says what happened and where; ``hint`` says what to do.
    """

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(ForgeError):
    exit_code = ExitCode.USAGE


class ConfigError(ForgeError):
    """forge.yml is invalid. ``location`` is ``file:line`` and ``key`` the key path."""

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = file or "forge.yml"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: " + (f"{key}: " if key else "")
        super().__init__(prefix + message, hint=hint)
        self.file, self.line, self.key = file, line, key


class SecretError(ForgeError):
    exit_code = ExitCode.USAGE


class ConnectError(ForgeError):
    pass


class HostKeyError(ConnectError):
    pass


class RemoteCommandError(ForgeError):
    def __init__(
        self, message: str, *, exit_status: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_status = exit_status


class LockedError(ForgeError):
    pass


class BuildError(ForgeError):
    pass


class ArtifactError(ForgeError):
    pass


class DeployFailed(ForgeError):
    """The deploy failed before any host switched: visitors saw nothing change."""


class RolledBack(ForgeError):
    exit_code = ExitCode.ROLLED_BACK


class RollbackFailed(ForgeError):
    exit_code = ExitCode.ROLLBACK_FAILED


class HealthError(ForgeError):
    pass


class BackupError(ForgeError):
    pass


class StoreError(ForgeError):
    pass


class ProvisionError(ForgeError):
    pass


class SyncError(ForgeError):
    """The sync cannot go on: a dump it cannot read, a target it must not write."""
