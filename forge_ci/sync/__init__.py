"""Sync: one environment's database (and later uploads) into another.

This package holds the self-contained core so far:

- :mod:`forge_ci.sync.replace`: rewrites one database value (plain text, JSON,
  PHP-serialized data at any depth) from FROM's URLs to TO's.
- :mod:`forge_ci.sync.sqldump`: streams a ``mariadb-dump`` through that rewriter,
  statement by statement, and counts what changed per table and column.

``SyncError`` is the leaf of :class:`forge_ci.errors.ForgeError` for a dump the
rewriter cannot read; it moves into ``forge_ci/errors.py`` with the CLI verb.
"""

from __future__ import annotations

from forge_ci.errors import ForgeError


class SyncError(ForgeError):
    """The sync cannot go on: a dump it cannot read, a rule it cannot apply."""


__all__ = ["SyncError"]
