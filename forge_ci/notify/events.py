"""What forge tells people about: a closed set of event names and the Event itself.

Event names are ``<group>.<outcome>``. The set is closed so that a typo in a
``notify:`` entry's ``events:`` list is a configuration error, not a target that
silently never hears anything:

==================== ========= =================================================
name                 severity  sent when
==================== ========= =================================================
deploy.succeeded     info      a release went live and passed its health checks
deploy.failed        error     a deploy failed before the switch; nothing changed
deploy.rolled_back   error     a deploy failed after the switch; the previous
                               release is live again
rollback.succeeded   warning   someone rolled an environment back on purpose
rollback.failed      critical  a rollback (asked for or automatic) failed: act now
backup.succeeded     info      a snapshot was taken and stored
backup.failed        error     a snapshot could not be taken or stored
verify.failed        error     a stored snapshot failed authentication or reading
monitor.alert        warning   a monitor check changed to warning or critical
monitor.recovered    info      a monitor check is healthy again
sync.succeeded       info      one environment's data was copied into another
sync.failed          error     a sync failed
drill.succeeded      info      a restore drill restored and checked a snapshot
drill.failed         error     a restore drill could not restore or check one
==================== ========= =================================================

An ``events:`` filter holds exact names or group names (the part before the dot:
``deploy``, ``rollback``, ``backup``, ``verify``, ``monitor``, ``sync``, ``drill``);
a group selects every event of that group. No filter means every event.

The :class:`Event` carries what a person needs to act: environment, project,
release and previous release, commit, actor, the workflow run's URL, a one-line
summary, a severity and a few facts (``details``, e.g. phase durations). It is
plain data: senders format it, nothing in it is secret, and it reads nothing from
the process environment; :func:`github_context` takes the environ mapping it is
given.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


# name -> default severity. One place: the docstring table mirrors it (a test checks).
EVENTS: Mapping[str, Severity] = MappingProxyType(
    {
        "deploy.succeeded": Severity.INFO,
        "deploy.failed": Severity.ERROR,
        "deploy.rolled_back": Severity.ERROR,
        "rollback.succeeded": Severity.WARNING,
        "rollback.failed": Severity.CRITICAL,
        "backup.succeeded": Severity.INFO,
        "backup.failed": Severity.ERROR,
        "verify.failed": Severity.ERROR,
        "monitor.alert": Severity.WARNING,
        "monitor.recovered": Severity.INFO,
        "sync.succeeded": Severity.INFO,
        "sync.failed": Severity.ERROR,
        "drill.succeeded": Severity.INFO,
        "drill.failed": Severity.ERROR,
    }
)

GROUPS: frozenset[str] = frozenset(name.split(".", 1)[0] for name in EVENTS)

# A detail value is a fact a person reads: a duration, a size, a count, a name.
Detail = str | int | float | bool
_MAX_DETAILS = 20
_MAX_TEXT = 300  # one line, not a log


def check_selector(selector: str) -> str:
    """Return ``selector`` if it names an event or a group, else raise ValueError."""
    if selector in EVENTS or selector in GROUPS:
        return selector
    raise ValueError(
        f"unknown event {selector!r}: use an event name ({', '.join(EVENTS)}) "
        f"or a group ({', '.join(sorted(GROUPS))})"
    )


def selects(selectors: Iterable[str], name: str) -> bool:
    """True when ``name`` is chosen by ``selectors`` (exact names or groups); an
    empty filter chooses every event."""
    chosen = tuple(selectors)
    if not chosen:
        return True
    group = name.split(".", 1)[0]
    return any(s in (name, group) for s in chosen)


@dataclass(frozen=True)
class GitHubContext:
    """Who and what from the Actions environment; empty outside a workflow run."""

    run_url: str | None = None
    actor: str | None = None
    commit: str | None = None


def github_context(environ: Mapping[str, str]) -> GitHubContext:
    """Read the run's URL, actor and commit from ``environ`` (the runner's variables).

    The run URL is ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID``
    (plus ``/attempts/N`` for a re-run), which is where the run's page lives.
    """
    server = environ.get("GITHUB_SERVER_URL", "").rstrip("/")
    repo = environ.get("GITHUB_REPOSITORY", "")
    run_id = environ.get("GITHUB_RUN_ID", "")
    url = None
    if server and repo and run_id.isdigit():
        url = f"{server}/{repo}/actions/runs/{run_id}"
        attempt = environ.get("GITHUB_RUN_ATTEMPT", "1")
        if attempt.isdigit() and int(attempt) > 1:
            url += f"/attempts/{attempt}"
    return GitHubContext(
        run_url=url,
        actor=environ.get("GITHUB_ACTOR") or None,
        commit=environ.get("GITHUB_SHA") or None,
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 1] + "…"


@dataclass(frozen=True)
class Event:
    """One thing that happened, as every target is told about it.

    Build it with :meth:`create`, which checks the name, fills the severity from
    the vocabulary and the run's context from the environ mapping it is given.
    """

    name: str
    environment: str
    summary: str
    severity: Severity
    project: str | None = None
    release: str | None = None
    previous_release: str | None = None
    commit: str | None = None
    actor: str | None = None
    run_url: str | None = None
    details: Mapping[str, Detail] = field(default_factory=lambda: MappingProxyType({}))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.name not in EVENTS:
            check_selector(self.name)  # a group name is not an event
            raise ValueError(f"{self.name!r} is a group, not an event name")
        if len(self.details) > _MAX_DETAILS:
            raise ValueError(f"an event carries at most {_MAX_DETAILS} details")
        for key, value in self.details.items():
            if not isinstance(value, str | int | float | bool):
                raise ValueError(f"detail {key!r} must be a string, number or boolean")
        object.__setattr__(self, "summary", _one_line(self.summary))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @classmethod
    def create(
        cls,
        name: str,
        *,
        environment: str,
        summary: str,
        environ: Mapping[str, str],
        severity: Severity | None = None,
        project: str | None = None,
        release: str | None = None,
        previous_release: str | None = None,
        commit: str | None = None,
        actor: str | None = None,
        details: Mapping[str, Detail] | None = None,
        time: datetime | None = None,
    ) -> Event:
        """An event with the run's URL, actor and commit taken from ``environ`` unless
        given; ``severity`` defaults to the event's own."""
        if name not in EVENTS:
            check_selector(name)
            raise ValueError(f"{name!r} is a group, not an event name")
        ctx = github_context(environ)
        return cls(
            name=name,
            environment=environment,
            summary=summary,
            severity=severity or EVENTS[name],
            project=project,
            release=release,
            previous_release=previous_release,
            commit=commit or ctx.commit,
            actor=actor or ctx.actor,
            run_url=ctx.run_url,
            details=details or {},
            time=time or datetime.now(UTC),
        )

    @property
    def title(self) -> str:
        """``[production] deploy.failed: <summary>``: a subject line or chat header."""
        return f"[{self.environment}] {self.name}: {self.summary}"

    def facts(self) -> list[tuple[str, str]]:
        """The event's fields a person reads, labelled, in a fixed order; absent ones left
        out. Every chat and mail format shows these."""
        rows = [
            ("Environment", self.environment),
            ("Project", self.project),
            ("Release", self.release),
            ("Previous release", self.previous_release),
            ("Commit", self.commit),
            ("Actor", self.actor),
            ("Severity", self.severity.value),
        ]
        out = [(label, value) for label, value in rows if value]
        out += [(key, _format_detail(value)) for key, value in self.details.items()]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the generic webhook's body). Stable keys; absent fields are null."""
        return {
            "version": 1,
            "event": self.name,
            "severity": self.severity.value,
            "environment": self.environment,
            "project": self.project,
            "summary": self.summary,
            "release": self.release,
            "previous_release": self.previous_release,
            "commit": self.commit,
            "actor": self.actor,
            "run_url": self.run_url,
            "time": self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "details": dict(self.details),
        }


def _format_detail(value: Detail) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
