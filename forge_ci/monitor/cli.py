"""``forge-ci monitor ENV``: one report on an environment's health, an exit code per
severity, notifications on changes of state only.

Exit codes: 0 everything ok, 5 a warning (``ExitCode.MONITOR_WARNING``), 6 something
critical (``ExitCode.MONITOR_CRITICAL``); 1 and 2 as for every command (the monitor
itself could not run, bad config). ``--state FILE`` is read and replaced on each run
(see :mod:`forge_ci.monitor.state`); without it every run alerts on what is wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forge_ci.backup import session
from forge_ci.command import Common, Context
from forge_ci.config.models import EnvironmentConfig, HealthCheck
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ExitCode, ForgeError, UsageError
from forge_ci.monitor import state
from forge_ci.monitor.checks import (
    Check,
    check_backup,
    check_disk,
    check_http,
    check_lock,
    check_schedule,
    check_tls,
    worst,
)
from forge_ci.notify import hooks
from forge_ci.notify.events import Severity as EventSeverity
from forge_ci.remote.base import Host
from forge_ci.targets import open_hosts, target_root
from forge_ci.tls import Severity

EXIT = {Severity.OK: ExitCode.OK, Severity.WARNING: ExitCode.MONITOR_WARNING,
        Severity.CRITICAL: ExitCode.MONITOR_CRITICAL}
_MARK = {Severity.OK: "ok  ", Severity.WARNING: "WARN", Severity.CRITICAL: "CRIT"}


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser(
        "monitor", parents=[common.config, common.json, common.dry_run],
        help="check health URLs, TLS, backup age, disk and the deploy lock; "
             "exit 0 ok, 5 warning, 6 critical")
    p.add_argument("environment", help="environment name from forge.yml")
    p.add_argument("--state", metavar="FILE", type=Path,
                   help="JSON state kept between runs: notify on changes only")
    p.add_argument("--last-activity", metavar="TIME",
                   help="the repository's last commit (ISO 8601 or Unix seconds): warn "
                        "before GitHub disables a schedule after 60 days without activity")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(ctx: Context) -> int:
    environment = ctx.args.environment
    loaded = ctx.config()
    config = loaded.environment(environment)
    now = dt.datetime.now(dt.UTC)
    last_activity = _when(ctx.args.last_activity) if ctx.args.last_activity else None
    before = state.load(ctx.args.state)
    cafile = ctx.environ.get("SSL_CERT_FILE") or None
    with ctx.runner.group(f"monitor {environment}"):
        checks = run_checks(ctx, environment, config, root=target_root(config, loaded.root),
                            cafile=cafile, now=now)
        if last_activity is not None:
            checks.append(check_schedule(last_activity, now=now))
        for c in checks:
            ctx.runner.log(f"{_MARK[c.severity]} {c.name}: {c.detail}")
    found = state.changes(before, checks)
    severity = worst(checks)
    if not ctx.dry_run:
        _notify(ctx, environment, found)
        if ctx.args.state is not None:
            state.save(ctx.args.state, state.after(before, checks, now.isoformat()))
        for c in checks:
            if c.severity is not Severity.OK:
                ctx.runner.warning(f"{environment}: {c.name}: {c.detail}")
    ctx.runner.set_output("severity", severity.value)
    ctx.runner.summary(_summary(environment, severity, checks))
    ctx.emit({"environment": environment, "severity": severity.value,
              "checks": [c.to_json() for c in checks],
              "alerts": [c.name for c in found.alerts], "recovered": found.recovered},
             "\n".join(f"{_MARK[c.severity]}  {c.name}: {c.detail}" for c in checks)
             + f"\n{environment}: {severity.value}")
    return EXIT[severity]


def run_checks(ctx: Context, environment: str, config: EnvironmentConfig, *, root: str,
               cafile: str | None, now: dt.datetime) -> list[Check]:
    mc = config.monitor
    checks: list[Check] = []
    urls = _health_urls(config)
    for hc in urls:
        checks.append(check_http(hc.url, status=hc.status, contains=hc.contains,
                                 response_max=mc.response_max, cafile=cafile))
    for url in _tls_urls(urls):
        checks.append(check_tls(url, min_days=mc.tls_min_days, cafile=cafile, now=now))
    if config.backup is not None:
        checks.append(_backup(ctx, environment, now))
    with _hosts(ctx, config) as (hosts, problem):
        if problem is not None:
            checks.append(problem)
        for host in hosts:
            checks.append(check_disk(host, root, min_free=mc.disk_min_free))
            checks.append(check_lock(host, Layout(root), max_age=mc.lock_max_age, now=now))
    return checks


def _health_urls(config: EnvironmentConfig) -> list[HealthCheck]:
    if config.health:
        return list(config.health)
    return [HealthCheck(url=config.url)] if config.url else []


def _tls_urls(checks: list[HealthCheck]) -> list[str]:
    seen: dict[tuple[str, int], str] = {}
    for hc in checks:
        parts = urlsplit(hc.url)
        if parts.scheme == "https" and parts.hostname:
            seen.setdefault((parts.hostname, parts.port or 443), hc.url)
    return list(seen.values())


def _backup(ctx: Context, environment: str, now: dt.datetime) -> Check:
    mc = ctx.config().environment(environment).monitor
    try:
        t = session.target(ctx.config(), environment)
        with session.repository(t, ctx.environ) as repo:
            if not repo.can_read:
                # Without the identity no manifest can be opened, so none can be
                # authenticated: a name in the bucket is all there is to go by.
                refs = repo.refs()
                newest = max((r.time for r in refs), default=None)
                found = check_backup(newest, max_age=mc.backup_max_age, now=now)
                return Check(found.name, found.severity,
                             found.detail + " (names only: give the monitor "
                             "FORGE_BACKUP_IDENTITY to authenticate snapshots)")
            # The newest snapshot a pinned signer vouches for.
            newest = repo.pick(None).manifest.time if repo.refs() else None
    except ForgeError as e:
        return Check("backup", Severity.CRITICAL, f"cannot list snapshots: {e.message}")
    return check_backup(newest, max_age=mc.backup_max_age, now=now)


@contextlib.contextmanager
def _hosts(ctx: Context, config: EnvironmentConfig
           ) -> Iterator[tuple[list[Host], Check | None]]:
    try:
        hosts = open_hosts(config, ctx.environ)
    except ForgeError as e:
        yield [], Check("hosts", Severity.CRITICAL, f"cannot connect: {e.message}")
        return
    try:
        yield hosts, None
    finally:
        for h in hosts:
            h.close()


def _notify(ctx: Context, environment: str, found: state.Changes) -> None:
    if found.alerts:
        level = (EventSeverity.CRITICAL if worst(found.alerts) is Severity.CRITICAL
                 else EventSeverity.WARNING)
        hooks.send(ctx, "monitor.alert", environment=environment, severity=level,
                   summary="; ".join(f"{c.name}: {c.detail}" for c in found.alerts),
                   details={c.name[:60]: c.severity.value for c in found.alerts})
    if found.recovered:
        hooks.send(ctx, "monitor.recovered", environment=environment,
                   summary="healthy again: " + ", ".join(found.recovered))


def _summary(environment: str, severity: Severity, checks: list[Check]) -> str:
    rows = "\n".join(f"| {c.severity.value} | {c.name} | {c.detail} |" for c in checks)
    return (f"### forge-ci monitor: {environment} {severity.value}\n\n"
            f"| severity | check | detail |\n|---|---|---|\n{rows}\n")


def _when(text: str) -> dt.datetime:
    try:
        if text.isdigit():
            return dt.datetime.fromtimestamp(int(text), dt.UTC)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--last-activity {text[:40]!r} is not a time",
                         hint="give ISO 8601 (git log -1 --format=%cI) or Unix seconds") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
