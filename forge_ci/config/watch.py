"""The ``monitor:`` and ``drill:`` sections of an environment (owned by forge_ci.monitor).

::

    monitor:
      tls_min_days: 14          # warn when a certificate has fewer days left
      backup_max_age: 26h       # critical when the newest snapshot is older (m, h, d)
      disk_min_free: 10%        # critical below this on any host (warning below twice it)
      lock_max_age: 30m         # warning when a deploy lock is held longer
      response_max: 3s          # warning when a health URL answers slower
    drill:
      database: example_drill   # scratch database (default: <backup database>_drill)
      dir: /srv/drill           # scratch directory on the host (default: <path>/.forge/drill)
      url: https://drill.example.com   # WordPress served from the scratch copy, if any
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: object, what: str) -> float:
    """``90s``, ``30m``, ``26h``, ``7d`` (or a number of seconds) as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ValueError(f"{what} must be a duration like 30m, 26h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MonitorConfig(_Frozen):
    tls_min_days: Annotated[int, Field(ge=0, le=365)] = 14
    backup_max_age: float = 26 * 3600.0  # seconds
    disk_min_free: Annotated[float, Field(gt=0, lt=100)] = 10.0  # percent
    lock_max_age: float = 30 * 60.0
    response_max: float = 3.0

    @field_validator("backup_max_age", "lock_max_age", "response_max", mode="before")
    @classmethod
    def _durations(cls, value: object) -> float:
        seconds = duration(value, "this setting")
        if seconds <= 0:
            raise ValueError("must be more than zero")
        return seconds

    @field_validator("disk_min_free", mode="before")
    @classmethod
    def _percent(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().removesuffix("%")
            try:
                return float(text)
            except ValueError:
                raise ValueError("must be a percentage like 10%") from None
        return value


class DrillConfig(_Frozen):
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_$-]{1,64}$")
    dir: str | None = Field(default=None, pattern=r"^/[^\x00\n]*[^/\x00\n]$")
    url: str | None = Field(default=None, pattern=r"^https?://")
