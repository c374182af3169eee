"""The backup leaves of the error tree (the tree's root is :mod:`forge_ci.errors`).

::

    ForgeError
    ├── SecretError
    │   └── KeyFormatError        exit 2  FORGE_BACKUP_RECIPIENT / _IDENTITY / _SIGNING_KEY
    │                                     malformed
    └── BackupError
        ├── BackupFormatError     exit 1  object corrupt, truncated, tampered or hostile
        ├── NoIdentityError       exit 1  none of the identities can open the object
        ├── SnapshotNotFound      exit 1  no such snapshot, or an object it needs is missing
        ├── UntrustedSnapshot     exit 1  not signed by a key in backup.signers (or prune
        │   │                             found such snapshots in its group: deletes nothing)
        │   └── UnsignedSnapshot  exit 1  no signature at all (--allow-unsigned accepts it)
        ├── DumpError             exit 1  the database dump failed, or was cut short
        ├── SourceChanged         exit 1  a file kept changing while it was read
        └── RestoreRefused        exit 2  the restore would overwrite live data without
                                          --yes, or its target is unsafe (non-empty
                                          drill directory, a path outside backup.paths
                                          or owned by deploy...)

Messages name hosts, paths, keys and snapshot ids; never key material, secrets or
object and file contents.
"""

from __future__ import annotations

from forge_ci.errors import BackupError, ExitCode, SecretError

_DAMAGED_HINT = (
    "the stored object is damaged or was not written by forge; "
    "run `forge-ci verify` and restore from another snapshot"
)


class BackupFormatError(BackupError):
    """A stored object is not a valid age file / zstd frame, or failed authentication.

    Covers truncation, trailing data, reordered or flipped bytes, a bad header MAC,
    non-canonical encodings and headers refused as hostile (too large, too many
    stanzas).
    """

    def __init__(self, message: str, *, hint: str | None = _DAMAGED_HINT) -> None:
        super().__init__(message, hint=hint)


class NoIdentityError(BackupError):
    """No identity (private key) given can unwrap the object's file key."""

    def __init__(
        self,
        message: str = "no identity matched any recipient of the backup",
        *,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            message,
            hint=hint
            or (
                "FORGE_BACKUP_IDENTITY must hold the private key (AGE-SECRET-KEY-1...) "
                "matching a FORGE_BACKUP_RECIPIENT that was set when the backup was written"
            ),
        )


class KeyFormatError(SecretError):
    """A recipient or identity string is malformed. The message names the source and
    line, never the value."""


class SnapshotNotFound(BackupError):
    pass


class UntrustedSnapshot(BackupError):
    """A manifest that no pinned signer signed: never restored, counted or acted on."""


class UnsignedSnapshot(UntrustedSnapshot):
    """A manifest with no signature: made before signing was set up, or forged."""


class DumpError(BackupError):
    pass


class SourceChanged(BackupError):
    pass


class RestoreRefused(BackupError):
    exit_code = ExitCode.USAGE
