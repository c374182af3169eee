"""Targets: where a release goes. See :mod:`forge_ci.remote.base` for the contract."""

from __future__ import annotations

from forge_ci.remote.base import Host, Process, Result, sh
from forge_ci.remote.local import LocalHost

__all__ = ["Host", "LocalHost", "Process", "Result", "sh"]
