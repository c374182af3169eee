"""Sync: one environment's database and uploads into another.

- :mod:`forge_ci.sync.replace`: rewrites one database value (plain text, JSON,
  PHP-serialized data at any depth) from FROM's URLs to TO's.
- :mod:`forge_ci.sync.sqldump`: streams a ``mariadb-dump`` through that rewriter,
  statement by statement, and counts what changed per table and column.
- :mod:`forge_ci.sync.anonymize`: the row hooks that scrub personal data on the stream.
- :mod:`forge_ci.sync.database`: dump, import, undo snapshot and SQL on a Host.
- :mod:`forge_ci.sync.uploads`: changed files only, into TO's ``shared/`` uploads.
- :mod:`forge_ci.sync.command`: ``forge-ci sync FROM TO`` (and ``sync-undo``).
"""

from __future__ import annotations

from forge_ci.errors import SyncError

__all__ = ["SyncError"]
