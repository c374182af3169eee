"""What the monitor remembers between runs, so it tells people about changes only.

The state file (``--state FILE``, JSON) holds each check's last severity::

    {"version": 1, "checks": {"backup": {"severity": "critical", "since": "..."}}}

Comparing a run's checks with it gives the :class:`Changes`: checks that became
warning or critical, or moved between the two (``alerts``), and checks that were
not ok and are ok again, or are gone (``recovered``). A first run (no file) alerts
on what is wrong and says nothing about what is fine. The file is replaced
atomically (temporary file, fsync, rename): a killed run leaves the old state.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from forge_ci.errors import UsageError
from forge_ci.monitor.checks import Check
from forge_ci.tls import Severity

State = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Changes:
    alerts: list[Check] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def load(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        checks = doc["checks"]
        return {str(k): {"severity": str(v["severity"]), "since": str(v.get("since", ""))}
                for k, v in checks.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{path} is not a monitor state file",
                         hint="delete it: the next run starts afresh") from None


def changes(before: State, checks: Sequence[Check]) -> Changes:
    out = Changes()
    seen = set()
    for c in checks:
        seen.add(c.name)
        was = before.get(c.name, {}).get("severity", Severity.OK.value)
        if c.severity is not Severity.OK and c.severity.value != was:
            out.alerts.append(c)
        elif c.severity is Severity.OK and was != Severity.OK.value:
            out.recovered.append(c.name)
    out.recovered.extend(n for n, v in before.items()
                         if n not in seen and v.get("severity") != Severity.OK.value)
    return out


def after(before: State, checks: Sequence[Check], now: str) -> dict[str, dict[str, str]]:
    new: dict[str, dict[str, str]] = {}
    for c in checks:
        old = before.get(c.name, {})
        same = old.get("severity") == c.severity.value
        new[c.name] = {"severity": c.severity.value,
                       "since": old.get("since", now) if same else now}
    return new


def save(path: Path, state: State) -> None:
    data = json.dumps({"version": 1, "checks": state}, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
