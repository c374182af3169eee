"""``forge-ci deploy | rollback | releases | health | doctor``.

What each verb needs is imported when it runs, not with the command line: a deploy
starts connecting to its hosts (:func:`forge_ci.targets.preconnect`) before the
config models and the deploy modules load, and the servers' start-up overlaps them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from forge_ci.command import Common, Context
from forge_ci.errors import (
    DeployFailed,
    ForgeError,
    HealthError,
    RollbackFailed,
    RolledBack,
    UsageError,
)
from forge_ci.targets import Preconnected, opening, preconnect, target_root

if TYPE_CHECKING:
    from forge_ci.build.builder import Artifact
    from forge_ci.config.models import EnvironmentConfig, HealthCheck
    from forge_ci.deploy.execute import Deployment, DeployResult
    from forge_ci.tls import TlsReport

# forge_ci.deploy.doctor.MIN_FREE_MB (a test keeps them equal): the doctor's
# modules load only when it runs.
_MIN_FREE_MB = 1024


def register(sub: Any, common: Common) -> None:
    env_help = "environment name from forge.yml"
    p = sub.add_parser("deploy", parents=[common.config, common.json, common.dry_run],
                       help="ship a release, switch atomically, check health, roll back if bad")
    p.add_argument("environment", help=env_help)
    p.add_argument("--artifact", metavar="DIR", type=Path,
                   help="a directory made by forge-ci build (default: build now)")
    p.add_argument("--adopt", action="store_true",
                   help="first deploy onto a site forge did not deploy: move its shared paths "
                        "(web/app/uploads, ...) into shared/ (try with --dry-run first)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("rollback", parents=[common.config, common.json, common.dry_run],
                       help="switch back to the previous good release (or --to RELEASE)")
    p.add_argument("environment", help=env_help)
    p.add_argument("--to", metavar="RELEASE", help="release id (see forge-ci releases)")
    p.add_argument("--force", action="store_true",
                   help="switch without the health gate (the site is down for another "
                        "reason: database, DNS); logged as forced")
    p.add_argument("--with-database", action="store_true",
                   help="also restore the database snapshot taken before that release "
                        "went live (backup.before_deploy); needs --yes")
    p.add_argument("--yes", action="store_true",
                   help="confirm overwriting the live database (--with-database)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("releases", parents=[common.config, common.json],
                       help="list releases: id, state, commit, subject, actor, time, took; "
                            "oldest first")
    p.add_argument("environment", help=env_help)
    p.set_defaults(func=cmd_releases)

    p = sub.add_parser("health", parents=[common.config, common.json],
                       help="run the environment's health checks against the live release")
    p.add_argument("environment", help=env_help)
    p.add_argument("--timeout", type=float, help="seconds to keep retrying (default: config)")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("doctor", parents=[common.config, common.json],
                       help="check a server before the first deploy and say what to fix")
    p.add_argument("environment", help=env_help)
    p.add_argument("--min-free-mb", type=int, default=_MIN_FREE_MB, metavar="MB",
                   help=f"free disk below this fails (default {_MIN_FREE_MB})")
    p.set_defaults(func=cmd_doctor)


@contextlib.contextmanager
def _deployment(ctx: Context, command: str, started: float | None = None,
                adopt: bool = False, early: Preconnected | None = None,
                meanwhile: Callable[[], None] | None = None) -> Iterator[Deployment]:
    """The environment's hosts, connected, as a :class:`Deployment`. ``meanwhile``
    runs while they connect (the hosts are opened in a thread); its errors come
    first, as they did when it ran before connecting."""
    if early is None and not ctx.config_loaded:
        early = preconnect(ctx.config_path, ctx.args.environment, ctx.environ)
    try:
        loaded = ctx.config()
        name = ctx.args.environment
        config = loaded.environment(name)
    except BaseException:
        if early is not None:
            early.close()
        raise
    with opening(config, ctx.environ, early) as pending:
        from forge_ci.deploy import health, safety
        from forge_ci.deploy.execute import Deployment
        from forge_ci.deploy.lock import owner_info
        from forge_ci.deploy.releases import Origin

        origin = Origin.from_checkout(loaded.root, ctx.environ)
        if meanwhile is not None:
            meanwhile()
        with ctx.runner.group(f"connect to {name}"):
            hosts = pending.hosts()
            for h in hosts:
                ctx.runner.log(f"{h.name}: connected")
    try:
        yield Deployment(
            environment=name, config=config, hosts=hosts,
            root=target_root(config, loaded.root),
            owner=owner_info(ctx.environ, command), log=ctx.runner.log,
            policy=health.HealthPolicy(timeout=config.health_timeout,
                                       cafile=ctx.environ.get("SSL_CERT_FILE") or None),
            by=origin.actor, warn=ctx.runner.warning, origin=origin.info(), adopt=adopt,
            started=time.monotonic() if started is None else started,
            untrusted=ctx.runner.untrusted, progress=ctx.runner.progress,
            snapshots=safety.for_environment(loaded, name, ctx.environ, ctx.runner.log),
        )
    finally:
        for h in hosts:
            h.close()


_VERDICT = {DeployFailed: "failed, the live site was not touched",
            RolledBack: "failed and rolled back: the previous release is live",
            RollbackFailed: "FAILED and could not roll back: check the site now"}


@contextlib.contextmanager
def _failure_summary(ctx: Context, verb: str, dep: Deployment) -> Iterator[None]:
    """On failure, the step summary still says what state every host is in."""
    try:
        yield
    except ForgeError as e:
        verdict = next((v for cls, v in _VERDICT.items() if isinstance(e, cls)), "failed")
        hosts = "\n".join(f"| {h.name} | {verdict} |" for h in dep.hosts)
        ctx.runner.summary(f"### forge-ci {verb}: {dep.environment} {verdict}\n\n"
                           f"{e.message}\n\n| host | state |\n|---|---|\n{hosts}")
        raise


def _report(ctx: Context, verb: str, res: DeployResult, started: float) -> None:
    r = ctx.runner
    r.set_output("release-id", res.release)
    r.set_output("previous-release-id", res.previous or "")
    r.set_output("url", res.url or "")
    if res.snapshot:
        r.set_output("snapshot-id", res.snapshot)
    seconds = time.monotonic() - started
    rows = "\n".join(f"| {h} | {res.release} |" for h in _hosts(res))
    metrics = "".join(f"| {k} | {v:g} |\n" for k, v in res.metrics.items())
    r.summary(f"### forge-ci {verb}: {res.plan.environment}\n\n"
              f"Release **{res.release}** is live (was {res.previous or 'none'}). "
              f"Health: {res.health or 'n/a'}. Took {seconds:.1f}s.\n\n"
              f"| host | live release |\n|---|---|\n{rows}"
              + (f"\n\n| metric | value |\n|---|---|\n{metrics}" if metrics else ""))
    ctx.outcome.update(
        release=res.release, previous=res.previous,
        summary=f"release {res.release} is live (was {res.previous or 'none'})",
        details={"seconds": round(seconds, 1), **res.metrics} | (
            {} if res.switch_to_healthy is None
            else {"switch_to_healthy_s": round(res.switch_to_healthy, 2)}))
    ctx.emit({"release": res.release, "previous": res.previous, "url": res.url,
              "health": res.health, "plan": res.plan.to_json(), "seconds": round(seconds, 3),
              "metrics": dict(res.metrics), "snapshot": res.snapshot,
              "switch_to_healthy": (None if res.switch_to_healthy is None
                                    else round(res.switch_to_healthy, 3))},
             f"{verb}: {res.release} is live on {res.plan.environment} "
             f"(previous: {res.previous or 'none'})")


def _hosts(res: DeployResult) -> list[str]:
    data = res.plan.to_json()
    return [h["host"] for h in data["hosts"]]


def cmd_deploy(ctx: Context) -> int:
    started = time.monotonic()
    # With an artifact the hosts come next: start connecting before the config loads.
    early = (preconnect(ctx.config_path, ctx.args.environment, ctx.environ)
             if ctx.args.artifact else None)
    try:
        loaded = ctx.config()
        loaded.environment(ctx.args.environment)  # fail on a bad name before building
    except BaseException:
        if early is not None:
            early.close()
        raise
    artifacts: list[Artifact] = []
    meanwhile: Callable[[], None] | None = None
    if ctx.args.artifact:
        def open_it() -> None:
            from forge_ci.build.builder import open_artifact

            artifacts.append(open_artifact(ctx.args.artifact))

        meanwhile = open_it
    else:
        from forge_ci.build.builder import build
        from forge_ci.build.cli import default_out, local_targets

        with ctx.runner.group("build"):
            artifacts.append(build(loaded.root, loaded.config.build, default_out(loaded),
                                   environ=ctx.environ, extra_exclude=local_targets(loaded),
                                   secrets=loaded.secrets, log=ctx.runner.log,
                                   warn=ctx.runner.warning, untrusted=ctx.runner.untrusted))
    with _deployment(ctx, "deploy", started, ctx.args.adopt, early, meanwhile) as dep, \
            ctx.runner.group(f"deploy to {dep.environment}"), _failure_summary(ctx, "deploy", dep):
        from forge_ci.deploy.execute import deploy

        res = deploy(dep, artifacts[0], dry_run=ctx.dry_run)
    if ctx.dry_run:
        ctx.emit(res.plan.to_json(), res.plan.render())
        return 0
    _report(ctx, "deploy", res, started)
    return 0


def cmd_rollback(ctx: Context) -> int:
    started = time.monotonic()
    force = bool(ctx.args.force)
    with_database = bool(ctx.args.with_database)
    if with_database and not ctx.dry_run and not ctx.args.yes:
        # As restore asks: the live database is overwritten.
        raise UsageError("rollback --with-database overwrites the live database",
                         hint="pass --yes to confirm (--dry-run shows what it would do)")
    with _deployment(ctx, "rollback", started) as dep, \
            ctx.runner.group(f"roll back {dep.environment}"), \
            _failure_summary(ctx, "rollback", dep):
        from forge_ci.deploy.execute import rollback

        if force and not ctx.dry_run:
            ctx.runner.warning(f"rollback --force: {dep.environment} switches WITHOUT health "
                               "checks; nothing verifies what visitors get")
        res = rollback(dep, ctx.args.to, dry_run=ctx.dry_run, force=force,
                       with_database=with_database)
    if ctx.dry_run:
        ctx.emit(res.plan.to_json(), res.plan.render())
        return 0
    if force:
        ctx.runner.summary(f"> [!WARNING]\n> Forced rollback: {res.release} was switched to "
                           "without health checks; the log records it as forced.")
    _report(ctx, "rollback", res, started)
    return 0


def cmd_releases(ctx: Context) -> int:
    from forge_ci.deploy.observe import observe
    from forge_ci.deploy.releases import Layout, list_releases, render_releases

    with _deployment(ctx, "releases") as dep:
        obs = observe(dep.hosts[0], Layout(dep.root))
    # Every listing is oldest first, the newest last (next to the prompt), as snapshots.
    infos = list(reversed(list_releases(obs.log, obs.dirs, obs.current)))
    ctx.emit({"environment": dep.environment, "host": obs.name, "current": obs.current,
              "releases": [i.to_json() for i in infos]}, render_releases(infos))
    return 0


def cmd_health(ctx: Context) -> int:
    from forge_ci.deploy import health
    from forge_ci.deploy.observe import observe
    from forge_ci.deploy.releases import Layout

    with _deployment(ctx, "health") as dep:
        obs = observe(dep.hosts[0], Layout(dep.root))
    checks = list(dep.config.health)
    if dep.config.marker and dep.config.url and obs.current:
        checks.insert(0, health.marker_check(dep.config.url, obs.current))
    if not checks:
        ctx.emit({"ok": True, "checks": 0}, "no health checks configured (set url or health)")
        return 0
    timeout = ctx.args.timeout if ctx.args.timeout is not None else dep.config.health_timeout
    policy = health.HealthPolicy(timeout=timeout, cafile=ctx.environ.get("SSL_CERT_FILE") or None)
    outcome = health.run_checks(checks, policy, ctx.runner.log)
    if not outcome.ok:
        raise HealthError(f"{dep.environment}: {outcome.detail}")
    certs = _certificates(ctx, dep.config, checks)
    ctx.emit({"ok": True, "release": obs.current, "detail": outcome.detail,
              "certificates": [{"url": url, "severity": r.severity(days).value,
                                "days_left": r.days_left, "summary": r.summary()}
                               for url, r, days in certs]},
             "\n".join([f"{dep.environment}: {outcome.detail} (release {obs.current})",
                        *(f"certificate {r.summary()}" for _, r, _ in certs)]))
    return 0


def _certificates(ctx: Context, config: EnvironmentConfig, checks: list[HealthCheck]
                  ) -> list[tuple[str, TlsReport, int]]:
    """The certificate each https origin presents (the checks proved chain and name by
    connecting; this adds the days left), warned about below ``monitor.tls_min_days``."""
    from forge_ci import tls

    cafile = ctx.environ.get("SSL_CERT_FILE")
    days = config.monitor.tls_min_days
    seen: dict[tuple[str, int], str] = {}
    for c in checks:
        parts = urlsplit(c.url)
        if parts.scheme == "https" and parts.hostname:
            seen.setdefault((parts.hostname, parts.port or 443), c.url)
    out = []
    for url in seen.values():
        report = tls.inspect_url(url, cafile=Path(cafile) if cafile else None)
        if report.severity(days) is not tls.Severity.OK:
            ctx.runner.warning(f"certificate {report.summary()} (monitor.tls_min_days: {days})")
        out.append((url, report, days))
    return out


def cmd_doctor(ctx: Context) -> int:
    """Exit 0 when every check is ok or a warning, 1 when something must be fixed."""
    from forge_ci.deploy import doctor
    from forge_ci.deploy.lock import Lock

    with _deployment(ctx, "doctor") as dep, ctx.runner.group(f"doctor {dep.environment}"):
        report = doctor.diagnose(
            dep.config, dep.hosts, dep.root, min_free=ctx.args.min_free_mb << 20,
            log=ctx.runner.log,
            hold=lambda h: Lock(h, dep.layout, dep.owner, dep.config.lock_wait))
    ctx.emit({"environment": dep.environment, **report.to_json()}, report.render())
    return 0 if report.ok else 1
