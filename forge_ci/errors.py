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
    └── ProvisionError                 exit 1  (provision package adds leaves)

Outside the tree, the handler maps Ctrl-C to exit 130 and anything else to 70 (a bug).
With ``--json`` every outcome is one object on stdout; :meth:`ForgeError.to_json` is
the failure's. ``ConfigError.more`` carries a file's other problems, reported at once.

Messages never contain secret values: callers pass names, paths and hosts only.
"""

from __future__ import annotations

from typing import Any


class ExitCode:
    """The exit codes documented in the README's table."""

    OK = 0
    FAILED = 1  # failed, the live site and stored data are as they were
    USAGE = 2  # bad config or command line; nothing was touched
    ROLLED_BACK = 3  # failed after the switch; the previous release is live again
    ROLLBACK_FAILED = 4  # failed and the automatic rollback failed too: look now
    MONITOR_WARNING = 5  # forge-ci monitor: something needs attention soon
    MONITOR_CRITICAL = 6  # forge-ci monitor: something is broken now
    BUG = 70  # an unexpected error: a bug in forge_ci
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGINT; a deploy rolls back what it started


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

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` prints for this error (never a secret: messages hold none)."""
        return {"ok": False, "error": self.message, "hint": self.hint,
                "exit_code": self.exit_code, "kind": type(self).__name__}


class UsageError(ForgeError):
    exit_code = ExitCode.USAGE


class ConfigError(ForgeError):
    """forge.yml is invalid: ``file``, ``line`` and ``key`` (the key path) say where.

    ``more`` holds the file's other problems, so one run reports all of them.
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
        more: tuple[ConfigError, ...] = (),
    ) -> None:
        where = file or "forge.yml"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: " + (f"{key}: " if key else "")
        super().__init__(prefix + message, hint=hint)
        self.file, self.line, self.key, self.detail = file, line, key, message
        self.more = more

    def __str__(self) -> str:
        text = super().__str__()
        if self.more:
            text += f"\n({len(self.more)} more problem{'s' if len(self.more) > 1 else ''}:)"
            text += "".join(f"\n{e}" for e in self.more)
        return text

    def to_json(self) -> dict[str, Any]:
        problems = [{"file": e.file, "line": e.line, "key": e.key, "message": e.detail,
                     "hint": e.hint} for e in (self, *self.more)]
        return {**super().to_json(), "problems": problems}


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
