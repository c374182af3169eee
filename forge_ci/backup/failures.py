"""Leaves of :class:`BackupError` raised by snapshots, dumps, backup and restore.

::

    BackupError
    ├── BackupFormatError / NoIdentityError   (forge_ci.backup.errors: age, zstd, keys)
    ├── SnapshotNotFound      no such snapshot, or an object it needs is missing
    ├── DumpError             the database dump failed, or was cut short
    ├── SourceChanged         a file kept changing while it was read
    └── RestoreRefused        the restore would overwrite live data without --yes,
                              or its target is unsafe (non-empty drill directory...)

Messages name hosts, paths, keys and snapshot ids; never secrets or file contents.
"""

from __future__ import annotations

from forge_ci.errors import BackupError, ExitCode


class SnapshotNotFound(BackupError):
    pass


class DumpError(BackupError):
    pass


class SourceChanged(BackupError):
    pass


class RestoreRefused(BackupError):
    exit_code = ExitCode.USAGE
