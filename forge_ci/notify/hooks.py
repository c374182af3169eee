"""Events from the CLI layer: once a verb's outcome is known, tell the configured targets.

The entry point (:mod:`forge_ci.cli`) calls :func:`announce` after every command with
the error it ended with (or none). Which event that is depends on the verb and the
error only (:func:`event_for`); what the verb learned on the way (release ids, phase
durations) it leaves in ``ctx.outcome`` (``release``, ``previous``, ``summary``,
``details``). ``forge-ci monitor`` sends its own events through :func:`send`, since
it tells about changes of state, not about its run.

Every event carries the environment, project, release, commit, actor and the run's URL
(from ``ctx.environ``: ``GITHUB_SHA``, ``GITHUB_ACTOR``, ``GITHUB_SERVER_URL`` ...).
Delivery problems become ``::warning::`` lines and never change the exit code.
Settings, from the process environment given: ``FORGE_NOTIFY_ATTEMPTS`` (3),
``FORGE_NOTIFY_TIMEOUT`` (seconds per attempt, 10), ``SSL_CERT_FILE`` (the CAs the
SMTP client trusts, default the system's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge_ci.command import Context
from forge_ci.errors import ForgeError, RollbackFailed, RolledBack
from forge_ci.notify.base import Dispatcher, Outcome, RetryPolicy
from forge_ci.notify.config import build_notifiers
from forge_ci.notify.events import Detail, Event, Severity

# verb -> (event on success, event on failure); None: nothing to tell.
VERB_EVENTS: Mapping[str, tuple[str | None, str]] = {
    "deploy": ("deploy.succeeded", "deploy.failed"),
    "rollback": ("rollback.succeeded", "rollback.failed"),
    "backup": ("backup.succeeded", "backup.failed"),
    "verify": (None, "verify.failed"),
    "sync": ("sync.succeeded", "sync.failed"),
    "drill": ("drill.succeeded", "drill.failed"),
}


def event_for(command: str, error: BaseException | None) -> str | None:
    """The event a verb's outcome makes, or None."""
    pair = VERB_EVENTS.get(command)
    if pair is None:
        return None
    if error is None:
        return pair[0]
    if command == "deploy" and isinstance(error, RolledBack):
        return "deploy.rolled_back"
    if command == "deploy" and isinstance(error, RollbackFailed):
        return "rollback.failed"
    return pair[1]


def policy(environ: Mapping[str, str]) -> RetryPolicy:
    def number(name: str, default: float) -> float:
        try:
            return float(environ.get(name, "") or default)
        except ValueError:
            return default

    return RetryPolicy(attempts=max(1, int(number("FORGE_NOTIFY_ATTEMPTS", 3))),
                       timeout=max(0.1, number("FORGE_NOTIFY_TIMEOUT", 10.0)))


def announce(ctx: Context, command: str, error: BaseException | None) -> None:
    """Send the event for ``command``'s outcome, if any. Never raises."""
    name = event_for(command, error)
    environment = getattr(ctx.args, "environment", None)
    if name is None or ctx.dry_run or not environment or not ctx.config_loaded:
        return
    outcome = ctx.outcome
    if error is None:
        summary = str(outcome.get("summary") or f"{command} of {environment} succeeded")
    elif isinstance(error, ForgeError):
        summary = error.message
    else:
        summary = f"{command} stopped on an internal error (see the run's log)"
    try:
        send(ctx, name, environment=environment, summary=summary,
             release=outcome.get("release"), previous=outcome.get("previous"),
             details=outcome.get("details"))
    except Exception as exc:  # notifications never fail the command
        ctx.runner.warning(f"notification {name} not sent ({type(exc).__name__})")


def send(ctx: Context, name: str, *, environment: str, summary: str,
         release: str | None = None, previous: str | None = None,
         details: Mapping[str, Detail] | None = None,
         severity: Severity | None = None) -> list[Outcome]:
    """Build the event and deliver it to ``environment``'s targets; warn on failures."""
    loaded = ctx.config()
    for u in loaded.unset:
        if u.key.startswith("notify") or u.key.startswith(f"environments.{environment}.notify"):
            entry = u.key.split("].", 1)[0] + "]"  # notify[0], environments.x.notify[1]
            ctx.runner.warning(f"{entry}: not notified of {name}: ${{{u.name}}} is not set")
    targets = loaded.config.notify_targets(environment)
    if not targets:
        return []
    event = Event.create(
        name, environment=environment, summary=ctx.runner.redact(summary),
        environ=ctx.environ, severity=severity, project=loaded.config.project,
        release=release, previous_release=previous, details=_details(details),
    )
    import ssl  # only when there is someone to tell: most runs have no targets

    import requests

    cafile = ctx.environ.get("SSL_CERT_FILE") or None
    with requests.Session() as session:
        routes = build_notifiers(targets, session=session,
                                 ssl_context=ssl.create_default_context(cafile=cafile))
        dispatcher = Dispatcher(routes, policy(ctx.environ),
                                lambda m: ctx.runner.warning(ctx.runner.redact(m)))
        return dispatcher.notify(event)


def _details(details: Mapping[str, Any] | None) -> dict[str, Detail]:
    out: dict[str, Detail] = {}
    for key, value in (details or {}).items():
        if isinstance(value, str | int | float | bool) and len(out) < 20:
            out[str(key)] = value
    return out
