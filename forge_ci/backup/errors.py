"""Leaves of the error tree raised by the backup formats (age, zstd) and key parsing.

::

    ForgeError
    ├── SecretError
    │   └── KeyFormatError        FORGE_BACKUP_RECIPIENT / _IDENTITY malformed
    └── BackupError
        ├── BackupFormatError     object corrupt, truncated, tampered or hostile
        └── NoIdentityError       none of the identities can open the object

Messages never contain key material, passphrases or object contents.
"""

from __future__ import annotations

from forge_ci.errors import BackupError, SecretError

_DAMAGED_HINT = (
    "the stored object is damaged or was not written by forge; "
    "run `forge-ci verify` and restore from another snapshot"
)


class BackupFormatError(BackupError):
    """A stored object is not a valid age file / zstd frame, or failed authentication.

    Covers truncation, trailing data, reordered or flipped bytes, a bad header MAC,
    non-canonical encodings and headers refused as hostile (too large, too many
    stanzas, scrypt work factor above the limit).
    """

    def __init__(self, message: str, *, hint: str | None = _DAMAGED_HINT) -> None:
        super().__init__(message, hint=hint)


class NoIdentityError(BackupError):
    """No identity (private key or passphrase) given can unwrap the object's file key."""

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
