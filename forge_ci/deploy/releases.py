"""The server layout and the release log.

::

    <path>/releases/<id>/        one immutable tree per release; ids sort by time
    <path>/shared/               .env, web/app/uploads, ... linked into each release
    <path>/current -> releases/<id>   relative link, replaced by rename, never unlinked
    <path>/.forge/lock           flock(1) file held while a run works
    <path>/.forge/lock.json      who holds it (run id, actor, time)
    <path>/.forge/log.jsonl      release log: one JSON event per line
    <path>/.forge/maintenance    maintenance files forge wrote and has yet to remove
    <path>/.forge/manifests/<id>.json

The log is the only source of order and state; mtimes are never used. A
release's state is the state of its last event:

    preparing -> prepared -> live
                         \\-> bad       (failed a check, or rolled back from)
    preparing -> (removed)              unfinished: removed by the next run
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

State = Literal["preparing", "prepared", "live", "bad", "removed"]
STATES: tuple[State, ...] = ("preparing", "prepared", "live", "bad", "removed")


@dataclass(frozen=True)
class Layout:
    root: str

    def _j(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def releases(self) -> str:
        return self._j("releases")

    @property
    def shared(self) -> str:
        return self._j("shared")

    @property
    def current(self) -> str:
        return self._j("current")

    @property
    def meta(self) -> str:
        return self._j(".forge")

    @property
    def lock(self) -> str:
        return self._j(".forge", "lock")

    @property
    def lock_owner(self) -> str:
        return self._j(".forge", "lock.json")

    @property
    def log(self) -> str:
        return self._j(".forge", "log.jsonl")

    @property
    def maintenance(self) -> str:
        return self._j(".forge", "maintenance")

    def link(self, name: str) -> str:
        return self._j(name)

    def release(self, rid: str) -> str:
        return self._j("releases", rid)

    def manifest(self, rid: str) -> str:
        return self._j(".forge", "manifests", f"{rid}.json")


def new_release_id(digest: str, now: float | None = None, taken: Sequence[str] = ()) -> str:
    """``YYYYmmddTHHMMSSZ-<digest8>``: sorts by time, says which build it is."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    rid = f"{stamp}-{digest[:8]}"
    n = 2
    while rid in taken:
        rid = f"{stamp}-{digest[:8]}-{n}"
        n += 1
    return rid


@dataclass(frozen=True)
class Event:
    release: str
    state: State
    time: str
    by: str = ""
    note: str = ""
    # Phase durations (``*_s``) and sizes of the run that went live; only on "live".
    metrics: Mapping[str, float] = field(default_factory=dict)
    # The database snapshot taken before this release's switch (backup.before_deploy).
    snapshot: str = ""

    def to_line(self) -> bytes:
        d: dict[str, object] = {"release": self.release, "state": self.state,
                                "time": self.time}
        if self.by:
            d["by"] = self.by
        if self.note:
            d["note"] = self.note
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        if self.snapshot:
            d["snapshot"] = self.snapshot
        return (json.dumps(d, sort_keys=True) + "\n").encode()


def event(release: str, state: State, by: str = "", note: str = "",
          metrics: Mapping[str, float] | None = None, snapshot: str = "") -> Event:
    return Event(release, state, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by, note,
                 dict(metrics or {}), snapshot)


@dataclass
class ReleaseLog:
    """The parsed log. ``order`` is first-appearance order, oldest first."""

    events: list[Event] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | None) -> ReleaseLog:
        log = cls()
        for raw in (data or b"").splitlines():
            try:
                d = json.loads(raw)
                ev = Event(str(d["release"]), d["state"], str(d.get("time", "")),
                           str(d.get("by", "")), str(d.get("note", "")),
                           _metrics(d.get("metrics")), _snapshot(d.get("snapshot")))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed run: the run never finished it
            if ev.state in STATES and "/" not in ev.release and ev.release not in ("", ".", ".."):
                log.events.append(ev)
        return log

    @property
    def order(self) -> list[str]:
        seen: dict[str, None] = {}
        for ev in self.events:
            seen.setdefault(ev.release, None)
        return list(seen)

    @property
    def metrics(self) -> Mapping[str, Mapping[str, float]]:
        """Each release's metrics, from the newest event that carries some."""
        return {ev.release: ev.metrics for ev in self.events if ev.metrics}

    @property
    def snapshots(self) -> Mapping[str, str]:
        """Each release's database snapshot id, from the newest event that names one."""
        return {ev.release: ev.snapshot for ev in self.events if ev.snapshot}

    @property
    def states(self) -> Mapping[str, State]:
        out: dict[str, State] = {}
        for ev in self.events:
            out[ev.release] = ev.state
        return out

    def last_good(self, exclude: str | None = None) -> str | None:
        """The newest release that went live and was not marked bad since."""
        states = self.states
        for rid in reversed(self.order):
            if rid != exclude and states.get(rid) == "live":
                return rid
        return None

    def previous_good(self, current: str | None) -> str | None:
        """The rollback target: the newest live release older than ``current``."""
        states, order = self.states, self.order
        idx = order.index(current) if current in order else len(order)
        for rid in reversed(order[:idx]):
            if states.get(rid) == "live":
                return rid
        return None


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    state: str
    current: bool
    present: bool
    metrics: Mapping[str, float] = field(default_factory=dict)
    snapshot: str | None = None  # database snapshot taken before its switch

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "state": self.state, "current": self.current,
                "present": self.present, "metrics": dict(self.metrics),
                "snapshot": self.snapshot}


def list_releases(log: ReleaseLog, dirs: Sequence[str], current: str | None) -> list[ReleaseInfo]:
    """Releases newest first: logged ones in log order, then unknown dirs."""
    states = log.states
    metrics, snapshots = log.metrics, log.snapshots
    out = [ReleaseInfo(r, states[r], r == current, r in dirs, metrics.get(r, {}),
                       snapshots.get(r))
           for r in log.order if states[r] != "removed" or r in dirs]
    known = {r.id for r in out}
    out += [ReleaseInfo(d, "unknown", d == current, True) for d in dirs if d not in known]
    return list(reversed(out))


def prune_plan(log: ReleaseLog, dirs: Sequence[str], current: str | None, keep: int) -> list[str]:
    """Release directories to delete after a successful run.

    Finished releases (prepared, live, bad) are counted newest first by log
    order and the newest ``keep`` stay; ``current`` and the last good release
    always stay. Unfinished or unknown directories are not this function's
    business: :func:`unfinished` lists them.
    """
    states = log.states
    finished = [r for r in log.order if states.get(r) in ("prepared", "live", "bad") and r in dirs]
    keep_set = set(finished[-keep:]) if keep > 0 else set()
    if current:
        keep_set.add(current)
    good = log.last_good()
    if good:
        keep_set.add(good)
    return [r for r in finished if r not in keep_set]


def unfinished(log: ReleaseLog, dirs: Sequence[str], current: str | None) -> list[str]:
    """Directories left by a run that died before finishing: removed first by the next run."""
    states = log.states
    stale = [d for d in dirs if d != current and states.get(d) in (None, "preparing", "removed")]
    # A run killed before its directory appeared still logged "preparing": close that too.
    stale += [r for r, s in states.items() if s == "preparing" and r not in dirs and r != current]
    return stale


def _metrics(raw: object) -> dict[str, float]:
    """Numbers only: a hand-edited or foreign entry is ignored, not trusted."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _snapshot(raw: object) -> str:
    """A snapshot id as backups name them; anything else is ignored, not trusted."""
    if isinstance(raw, str) and raw and len(raw) <= 64 and all(
            c.isalnum() or c in "-_.:" for c in raw):
        return raw
    return ""
