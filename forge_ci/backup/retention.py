"""Which snapshots to keep: restic's ``forget`` rules, as a pure function.

Semantics (those of restic's ``ApplyPolicy``, which the oracle test in
``tests/backup/test_retention_oracle.py`` compares against the real binary):

* Snapshots of one group (site + environment, never the runner's host name) are
  walked newest first.
* Each rule (last, hourly, daily, weekly, monthly, yearly) has a count and a bucket
  function of the snapshot's wall-clock time *in the policy's time zone*: the hour
  ``YYYYMMDDHH``, the day, the ISO week (``isocalendar`` year and week, as Go's
  ``ISOWeek``), the month, the year; "last" puts every snapshot in its own bucket.
* Walking newest first, a snapshot whose bucket differs from the previous snapshot
  the rule kept is kept by that rule, and the rule's count goes down by one. A rule
  with no count left keeps nothing more. So each rule keeps the *newest* snapshot of
  each of its ``n`` most recent non-empty buckets.
* A snapshot kept by any rule is kept; every rule that kept it is a reason.
* restic >= 0.16 also keeps the *oldest* snapshot while a rule still has count left
  (so a young repository keeps its first backup); ``keep_oldest=False`` gives the
  behaviour of older restic. When the oldest is kept only for that, the reason reads
  ``oldest daily snapshot`` (as restic >= 0.17 prints it).

forge adds one rule restic lacks: ``protect`` names snapshots that are kept whatever
the policy says (prune passes the newest verified snapshot). An empty policy is
refused by the config model, never treated as "keep everything" or "keep nothing".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from forge_ci.config.backup import Retention

PROTECTED = "newest verified snapshot"

Bucket = Callable[[datetime, int], int]

# Same integer encodings as restic, so bucket equality matches exactly.
_RULES: tuple[tuple[str, Bucket], ...] = (
    ("last", lambda _t, nr: nr),
    ("hourly", lambda t, _nr: t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour),
    ("daily", lambda t, _nr: t.year * 10_000 + t.month * 100 + t.day),
    ("weekly", lambda t, _nr: t.isocalendar()[0] * 100 + t.isocalendar()[1]),
    ("monthly", lambda t, _nr: t.year * 100 + t.month),
    ("yearly", lambda t, _nr: t.year),
)


@dataclass(frozen=True)
class Candidate:
    """What the policy needs to know about a snapshot. ``time`` must be timezone-aware."""

    id: str
    time: datetime


@dataclass(frozen=True)
class Decision:
    id: str
    time: datetime
    keep: bool
    reasons: tuple[str, ...]  # empty when removed


def apply_policy(
    snapshots: Iterable[Candidate],
    policy: Retention,
    *,
    protect: Iterable[str] = (),
    keep_oldest: bool = True,
) -> list[Decision]:
    """Decide for every snapshot of one group; returns decisions newest first.

    Ties in time are broken by id (descending) so the result is deterministic.
    """
    zone = ZoneInfo(policy.timezone)
    ordered = sorted(snapshots, key=lambda c: (c.time, c.id), reverse=True)
    for c in ordered:
        if c.time.tzinfo is None:
            raise ValueError(f"snapshot {c.id} has a naive time")
    counts = {name: n or 0 for name, n in policy.counts().items()}
    last_seen: dict[str, int | None] = dict.fromkeys(counts)
    protected = set(protect)
    out: list[Decision] = []
    for nr, cand in enumerate(ordered):
        local = cand.time.astimezone(zone)
        oldest = nr == len(ordered) - 1
        reasons = _rules_keeping(local, nr, oldest and keep_oldest, counts, last_seen)
        if cand.id in protected:
            reasons.append(PROTECTED)
        out.append(Decision(cand.id, cand.time, bool(reasons), tuple(reasons)))
    return out


def _rules_keeping(local: datetime, nr: int, oldest: bool, counts: dict[str, int],
                   last_seen: dict[str, int | None]) -> list[str]:
    """Update the buckets for one snapshot and return the rules that keep it."""
    reasons = []
    for name, bucket in _RULES:
        if counts[name] <= 0:
            continue
        value = bucket(local, nr)
        if value != last_seen[name]:
            last_seen[name] = value
            counts[name] -= 1
            reasons.append(f"{name} snapshot")
        elif oldest:
            # restic >= 0.16: the oldest is kept while the rule has count left.
            counts[name] -= 1
            reasons.append(f"oldest {name} snapshot")
    return reasons


def describe(policy: Retention) -> str:
    """``keep 7 last, 14 daily snapshots (Europe/Berlin)`` for logs and --dry-run."""
    parts = [f"{n} {name}" for name, n in policy.counts().items() if n]
    return f"keep {', '.join(parts)} snapshots ({policy.timezone})"

