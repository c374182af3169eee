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
    <path>/releases/.forge-trash-<id>/   a pruned release, renamed away, being deleted

The log is the only source of order and state; mtimes are never used. A
release's state is the state of its last event:

    preparing -> prepared -> live -> previous      (replaced by a later deploy)
                              \\-> rolled_back   (left by a manual rollback: still good)
                         \\-> bad                 (failed its checks, rolled back automatically)
    preparing -> (removed)                          unfinished: removed by the next run

``live``, ``previous`` and ``rolled_back`` are good: a rollback may go to any of
them. Logs written before ``previous`` existed leave replaced releases ``live``;
:func:`list_releases` shows every good release that ``current`` does not point
at as ``previous``, so old logs read the same.

Each event may carry who and what: ``by`` (actor), ``commit``, ``subject``, ``run``
(CI run id or URL) on ``preparing``, ``seconds`` (how long the run took) on ``live``.
Readers ignore keys they do not know, so older forge versions still read new logs.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

State = Literal["preparing", "prepared", "live", "previous", "rolled_back", "bad", "removed"]
STATES: tuple[State, ...] = ("preparing", "prepared", "live", "previous", "rolled_back", "bad",
                             "removed")
# Releases that went live and were never found bad: what a rollback may go to.
GOOD: tuple[State, ...] = ("live", "previous", "rolled_back")
# What an event may say about the release besides its state (see the module docstring).
INFO_KEYS = ("commit", "subject", "run", "seconds")
Info = tuple[tuple[str, str], ...]


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

    def trash(self, rid: str) -> str:
        """Where a release removed in the background waits to be deleted."""
        return self._j("releases", TRASH_PREFIX + rid)


# Releases renamed here are no longer releases (observe skips dot names); whatever
# a killed deletion left is deleted with the next one.
TRASH_PREFIX = ".forge-trash-"


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
    info: Info = ()  # (key, value) pairs, keys from INFO_KEYS
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
        d.update((k, v) for k, v in self.info if k in INFO_KEYS and v)
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        if self.snapshot:
            d["snapshot"] = self.snapshot
        return (json.dumps(d, sort_keys=True) + "\n").encode()


def event(release: str, state: State, by: str = "", note: str = "",
          metrics: Mapping[str, float] | None = None, info: Info = (),
          snapshot: str = "") -> Event:
    return Event(release, state, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by, note,
                 info, dict(metrics or {}), snapshot)


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
                           tuple((k, str(d[k])) for k in INFO_KEYS if d.get(k) not in (None, "")),
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
            if rid != exclude and states.get(rid) in GOOD:
                return rid
        return None

    def previous_good(self, current: str | None) -> str | None:
        """The rollback target: the newest good release older than ``current``."""
        states, order = self.states, self.order
        idx = order.index(current) if current in order else len(order)
        for rid in reversed(order[:idx]):
            if states.get(rid) in GOOD:
                return rid
        return None

    def details(self, release: str) -> dict[str, str]:
        """What the log says about ``release``: the first value of each INFO_KEYS key,
        ``actor`` (who prepared it), ``time`` (when it first went live, else when it was
        prepared) and the ``note`` of its last event."""
        out: dict[str, str] = {}
        went_live = ""
        for ev in self.events:
            if ev.release != release:
                continue
            for k, v in ev.info:
                out.setdefault(k, v)
            if ev.by:
                out.setdefault("actor", ev.by)
            out.setdefault("time", ev.time)
            if ev.state == "live" and not went_live:
                went_live = ev.time
            out["note"] = ev.note
        if went_live:
            out["time"] = went_live
        return out


@dataclass(frozen=True)
class ReleaseInfo:
    """One line of ``forge-ci releases``: the columns in :data:`COLUMNS` order."""

    id: str
    state: str
    current: bool
    present: bool
    commit: str = ""
    subject: str = ""
    actor: str = ""
    time: str = ""
    seconds: float | None = None
    run: str = ""
    note: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    snapshot: str | None = None  # database snapshot taken before its switch

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "state": self.state, "current": self.current,
                "present": self.present, "commit": self.commit, "subject": self.subject,
                "actor": self.actor, "time": self.time, "seconds": self.seconds,
                "run": self.run, "note": self.note, "metrics": dict(self.metrics),
                "snapshot": self.snapshot}

    def row(self) -> tuple[str, ...]:
        subject = self.subject if len(self.subject) <= 50 else self.subject[:49] + "…"
        return (self.id, self.state + ("" if self.present else " (gone)"), self.commit[:10],
                subject, self.actor, self.time, human_duration(self.seconds),
                self.snapshot or "")


# "snapshot": the database snapshot taken before the release's switch (before_deploy).
COLUMNS = ("release", "state", "commit", "subject", "actor", "time", "took", "snapshot")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def shown_state(raw: State, is_current: bool) -> str:
    """The state a reader needs: the good release ``current`` points at is ``live``,
    every other good release ``previous`` (old logs leave replaced ones ``live``)."""
    if raw in GOOD:
        if is_current:
            return "live"
        return "previous" if raw == "live" else raw
    return raw


def list_releases(log: ReleaseLog, dirs: Sequence[str], current: str | None) -> list[ReleaseInfo]:
    """Releases newest first: logged ones in log order, then unknown dirs."""
    states = log.states
    metrics, snapshots = log.metrics, log.snapshots
    out = []
    for r in log.order:
        if states[r] == "removed" and r not in dirs:
            continue
        d = log.details(r)
        try:
            seconds: float | None = float(d["seconds"]) if "seconds" in d else None
        except ValueError:
            seconds = None
        out.append(ReleaseInfo(r, shown_state(states[r], r == current), r == current, r in dirs,
                               d.get("commit", ""), d.get("subject", ""), d.get("actor", ""),
                               d.get("time", ""), seconds, d.get("run", ""), d.get("note", ""),
                               metrics.get(r, {}), snapshots.get(r)))
    known = {r.id for r in out}
    out += [ReleaseInfo(d, "unknown", d == current, True) for d in dirs if d not in known]
    return list(reversed(out))


def render_releases(infos: Sequence[ReleaseInfo]) -> str:
    """A table of ``infos`` in the order given; ``*`` marks the release ``current`` points at."""
    if not infos:
        return "no releases yet"
    rows = [COLUMNS] + [tuple(v or "-" for v in i.row()) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(COLUMNS))]
    marks = [" "] + ["*" if i.current else " " for i in infos]
    return "\n".join(
        (m + " " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))).rstrip()
        for m, r in zip(marks, rows, strict=True))


@dataclass(frozen=True)
class Origin:
    """Who deploys what: the commit checked out and the CI run, recorded with a release.

    Built by the CLI from git in the site checkout and the process environment
    (``GITHUB_SHA``, ``GITHUB_ACTOR``, ``GITHUB_RUN_ID``...), passed down explicitly.
    """

    actor: str = ""
    commit: str = ""
    subject: str = ""
    run: str = ""

    def info(self) -> Info:
        return tuple((k, v) for k, v in (("commit", self.commit), ("subject", self.subject),
                                         ("run", self.run)) if v)

    @classmethod
    def from_checkout(cls, root: Path, environ: Mapping[str, str]) -> Origin:
        # The checkout is what gets built; GITHUB_SHA only when there is no git.
        commit, subject = _git_head(root)
        if not commit:
            commit = environ.get("GITHUB_SHA", "")
        run = environ.get("GITHUB_RUN_ID", "")
        server, repo = environ.get("GITHUB_SERVER_URL", ""), environ.get("GITHUB_REPOSITORY", "")
        if run and server and repo:
            run = f"{server}/{repo}/actions/runs/{run}"
        actor = environ.get("GITHUB_ACTOR", "") or environ.get("USER", "")
        return cls(actor, commit, subject[:200], run)


def _git_head(root: Path) -> tuple[str, str]:
    """HEAD's commit and subject, or empty strings outside a git checkout."""
    try:
        r = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%H%n%s"],
                           capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "", ""
    if r.returncode != 0:
        return "", ""
    commit, _, subject = r.stdout.decode("utf-8", "replace").partition("\n")
    return commit.strip(), subject.strip()


def prune_plan(log: ReleaseLog, dirs: Sequence[str], current: str | None, keep: int) -> list[str]:
    """Release directories to delete after a successful run.

    Finished releases (prepared, good or bad) are counted newest first by log
    order and the newest ``keep`` stay; ``current`` and the last good release
    always stay. Unfinished or unknown directories are not this function's
    business: :func:`unfinished` lists them.
    """
    states = log.states
    finished = [r for r in log.order
                if states.get(r) in ("prepared", "bad", *GOOD) and r in dirs]
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
