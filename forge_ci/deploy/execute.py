"""Carry out deploys and rollbacks, in PRODUCT.md's order, across every host.

Prepare every host, then switch every host; if anything fails after the first
switch, every switched host goes back. Errors raised here say what state the
site is in: :class:`DeployFailed` (nothing switched), :class:`RolledBack`
(switched, then restored), :class:`RollbackFailed` (could not restore).
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from forge_ci.build.builder import Artifact
from forge_ci.config.models import EnvironmentConfig, HealthCheck
from forge_ci.deploy import health, php_refresh
from forge_ci.deploy.lock import Lock
from forge_ci.deploy.plan import DeployPlan, Observed, RollbackPlan, observe, plan_host
from forge_ci.deploy.releases import (
    Layout,
    State,
    event,
    new_release_id,
    prune_plan,
    unfinished,
)
from forge_ci.deploy.ship import ship, stage_script, staged_base
from forge_ci.errors import (
    DeployFailed,
    ForgeError,
    RollbackFailed,
    RolledBack,
    UsageError,
)
from forge_ci.remote.base import Host, sh

Log = Callable[[str], None]


@dataclass
class Deployment:
    """Everything one deploy or rollback needs, built by the CLI and handed down."""

    environment: str
    env: EnvironmentConfig
    hosts: Sequence[Host]
    root: str
    owner: Mapping[str, str]
    log: Log
    policy: health.Policy = field(default_factory=health.Policy)
    by: str = ""
    warn: Log | None = None  # a problem that does not fail the run (default: log)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)


@dataclass(frozen=True)
class Result:
    release: str
    previous: str | None
    url: str | None
    plan: DeployPlan | RollbackPlan
    health: str = ""
    # From the end of the switch until every check passed (the marker comes first).
    switch_to_healthy: float | None = None


# -- small remote steps ------------------------------------------------------

def _log_script(obs: Observed, release: str, state: State, by: str, note: str = "") -> str:
    """A shell line appending one event; the in-memory log follows along."""
    ev = event(release, state, by, note)
    obs.log.events.append(ev)
    return f"printf '%s\\n' {sh(ev.to_line().decode().strip())} >> {sh(obs.layout.log)}\n"


def _record(obs: Observed, release: str, state: State, by: str, note: str = "") -> None:
    obs.host.check(obs.host.run(_log_script(obs, release, state, by, note), check=False),
                   "writing the release log")


def _point(host: Host, link: str, release: str) -> None:
    """Point ``link`` at ``release``: a new link beside it, renamed over it."""
    tmp = link + ".forge-tmp"
    target = posixpath.join("releases", release)
    host.check(host.run(
        f"rm -f {sh(tmp)} && ln -s {sh(target)} {sh(tmp)} && mv -Tf {sh(tmp)} {sh(link)}",
        check=False), f"pointing {posixpath.basename(link)} at {release}")


def _switch(host: Host, layout: Layout, release: str | None) -> None:
    """Point ``current`` at ``release`` by temp link + rename; None moves it aside."""
    if release is None:
        # First deploy failed: there is no earlier release to go back to.
        host.run(f"mv -Tf {sh(layout.current)} {sh(layout.meta + '/failed-current')}",
                 check=False)
        return
    _point(host, layout.current, release)


def _hook_env(dep: Deployment, release: str, previous: str | None) -> str:
    pairs = {"FORGE_ENVIRONMENT": dep.environment, "FORGE_RELEASE": release,
             "FORGE_RELEASE_PATH": dep.layout.release(release),
             "FORGE_PREVIOUS_RELEASE": previous or "", "FORGE_PATH": dep.root}
    return "".join(f"export {k}={sh(v)}\n" for k, v in pairs.items())


def _hooks(dep: Deployment, obs: Observed, which: str, commands: Sequence[str],
           release: str, previous: str | None) -> None:
    for i, command in enumerate(commands):
        dep.log(f"{obs.name}: {which}[{i}]: {command}")
        r = obs.host.run(_hook_env(dep, release, previous)
                         + f"cd {sh(dep.layout.release(release))} || exit 1\n{command}\n",
                         check=False, timeout=900)
        for line in (r.stdout + r.stderr).decode(errors="replace").splitlines()[-30:]:
            dep.log(f"    {line}")
        if r.status != 0:
            raise DeployFailed(f"{obs.name}: hook {which}[{i}] failed with exit {r.status}",
                               hint="fix the hook or the release; the output is above")


def _php_refresh(dep: Deployment, obs: Observed, release: str | None) -> None:
    """Make PHP run ``release``, which ``current`` now points at (None: nothing)."""
    started = time.monotonic()
    where = dep.layout.release(release) if release else None
    done = php_refresh.refresh(obs.host, dep.env.php, where)
    if done:
        dep.log(f"{obs.name}: PHP: {done} ({time.monotonic() - started:.2f}s)")


def _php_probe(dep: Deployment, obs: Observed, release: str) -> None:
    """Before any switch: the pool that will be refreshed can be, from this release."""
    answer = php_refresh.probe(obs.host, dep.env.php, dep.layout.release(release))
    if answer is not None and answer.state == "off":
        dep.log(f"{obs.name}: PHP: opcache is off in the pool at {dep.env.php.fpm_socket}; "
                "nothing will need a reset")


def _dotenv(env: EnvironmentConfig) -> bytes:
    lines = ["# Written by forge-ci for this release. Do not edit on the server."]
    for key, secret in env.dotenv.items():
        value = secret.get_secret_value()
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
                   .replace("\n", "\\n"))
        lines.append(f'{key}="{escaped}"')
    return ("\n".join(lines) + "\n").encode()


def _shared_paths(env: EnvironmentConfig) -> list[str]:
    # A rendered .env belongs to its release (rollback brings the old one back).
    return [p for p in env.shared if not (p == ".env" and env.dotenv)]


def _link_shared(dep: Deployment, obs: Observed, release: str, then: str = "") -> None:
    lay = dep.layout
    script = ["set -e"]
    for p in _shared_paths(dep.env):
        s = posixpath.join(lay.shared, p)
        r = posixpath.join(lay.release(release), p)
        rel = posixpath.relpath(s, posixpath.dirname(r))
        script.append(
            f'if [ ! -e {sh(s)} ]; then mkdir -p {sh(posixpath.dirname(s))}; '
            f'if [ -e {sh(r)} ] && [ ! -L {sh(r)} ]; then cp -a {sh(r)} {sh(s)}; '
            f'else mkdir -p {sh(s)}; fi; fi'
        )
        script.append(f"rm -rf {sh(r)}; mkdir -p {sh(posixpath.dirname(r))}; "
                      f"ln -s {sh(rel)} {sh(r)}")
    script.append(then)
    obs.host.check(obs.host.run("\n".join(script), check=False), "linking shared paths")


def _extras(dep: Deployment) -> list[str]:
    out = _shared_paths(dep.env)
    if dep.env.dotenv:
        out.append(".env")
    # forge's own per-release files are never inherited, whatever today's settings:
    # an old release's marker would claim to be this one (marker: false).
    out.append(health.MARKER_PATH)
    out.append(php_refresh.SCRIPT)  # left by a killed run
    return out


# -- deploy ------------------------------------------------------------------

def _checks(dep: Deployment, release: str) -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    if dep.env.marker and dep.env.url:
        checks.append(health.marker_check(dep.env.url, release))
    return checks + list(dep.env.health)


def _preview_checks(dep: Deployment, release: str) -> list[HealthCheck]:
    """The checks, aimed at the preview route instead of the site."""
    pv, url = dep.env.preview, dep.env.url
    if pv is None or url is None:
        return []
    base, new = url.rstrip("/"), pv.url.rstrip("/")
    return [c.model_copy(update={"url": new + c.url[len(base):]})
            for c in _checks(dep, release) if c.url.startswith(base)]


def _notes(dep: Deployment, artifact: Artifact) -> list[str]:
    if dep.env.preview:
        notes = [f"preview route: checks run at {dep.env.preview.url} before the switch; "
                 "after it the live site is checked again, with automatic rollback"]
    else:
        notes = ["no preview route: checks run after the switch, with automatic rollback"]
    if not dep.env.url and not dep.env.health:
        notes.append("no url and no health checks: the switch is not verified over HTTP")
    elif dep.env.marker and not dep.env.url:
        notes.append("marker check needs url: skipped")
    if dep.env.marker and "web" not in artifact.manifest.entries:
        notes.append("the build has no web/ directory: the release marker cannot be served")
    php = dep.env.php
    if php.refresh == "opcache-reset":
        notes.append(f"PHP refresh: opcache reset in the FPM pool at {php.fpm_socket} on each "
                     "host, through FastCGI (checked before the switch)")
    elif php.refresh == "command":
        notes.append("PHP refresh: reload_command on each host")
    return notes


def make_plan(dep: Deployment, artifact: Artifact, observed: Sequence[Observed]) -> DeployPlan:
    taken = sorted({d for o in observed for d in o.dirs} | {r for o in observed
                                                           for r in o.log.order})
    release = new_release_id(artifact.digest, taken=taken)
    hosts = tuple(plan_host(o, artifact.manifest, release, dep.env.keep_releases)
                  for o in observed)
    checks = tuple(f"{c.url} -> {c.status}" + (f" containing {c.contains!r}" if c.contains else "")
                   for c in _checks(dep, release))
    return DeployPlan(dep.environment, release, hosts, checks, tuple(_notes(dep, artifact)))


def _prepare(dep: Deployment, obs: Observed, artifact: Artifact, release: str) -> None:
    lay = dep.layout
    host = obs.host
    dep.log(f"{obs.name}: shipping {release}")
    stale = unfinished(obs.log, obs.dirs, obs.current)
    # Round trips are the cost on a fast network: each step below is one command.
    script = "set -e\n" + sh("mkdir", "-p", lay.releases, lay.shared,
                             posixpath.dirname(lay.manifest(release))) + "\n"
    # Staged copies of anything but the live release are stale.
    keep = posixpath.basename(staged_base(lay.release(obs.current or "-")))
    script += (f"find {sh(lay.releases)} -mindepth 1 -maxdepth 1 -name '.forge-base-*' "
               f"! -name {sh(keep)} -exec rm -rf {{}} + 2>/dev/null || true\n")
    if stale:
        dep.log(f"{obs.name}: removing unfinished releases {', '.join(stale)}")
        script += sh("rm", "-rf", "--", *(lay.release(r) for r in stale if r in obs.dirs)) + "\n"
        script += "".join(_log_script(obs, r, "removed", dep.by, "unfinished")
                          for r in stale if r in obs.log.states)
    script += _log_script(obs, release, "preparing", dep.by)
    script += f"cat > {sh(lay.manifest(release))}\n"
    host.check(host.run(script, input=artifact.manifest.to_bytes(), check=False),
               "starting the release")
    base = lay.release(obs.current) if obs.current and obs.current_manifest else None
    generated: dict[str, tuple[bytes, int]] = {}
    if dep.env.dotenv:
        generated[".env"] = (_dotenv(dep.env), 0o600)
    if dep.env.marker and "web" in artifact.manifest.entries:
        generated[health.MARKER_PATH] = (health.marker_php(release), 0o644)
    ship(host, artifact, lay.release(release), base, obs.current_manifest, _extras(dep),
         dep.log, generated=generated)
    _php_probe(dep, obs, release)
    hooks = dep.env.hooks.before_switch
    tail = "" if hooks else _log_script(obs, release, "prepared", dep.by)
    dep.log(f"{obs.name}: linking shared paths")
    _link_shared(dep, obs, release, then=tail)
    if hooks:
        _hooks(dep, obs, "before_switch", hooks, release, obs.current)
        _record(obs, release, "prepared", dep.by)


def deploy(dep: Deployment, artifact: Artifact, *, dry_run: bool = False) -> Result:
    if dry_run:
        observed = [observe(h, dep.layout) for h in dep.hosts]
        plan = make_plan(dep, artifact, observed)
        return Result(plan.release, observed[0].current, dep.env.url, plan)
    with contextlib.ExitStack() as stack:
        _lock_all(dep, stack)
        observed = [observe(h, dep.layout) for h in dep.hosts]
        plan = make_plan(dep, artifact, observed)
        release = plan.release
        previous = observed[0].current
        dep.log(plan.render())
        _prepare_all(dep, observed, artifact, release)
        _preview(dep, observed, release)
        outcome = _switch_all_and_check(dep, observed, release)
        for obs in observed:
            _record_live(dep, obs, release, functools.partial(_finish, dep, obs, release))
        return Result(release, previous, dep.env.url, plan, outcome.detail, outcome.seconds)
    raise AssertionError("unreachable")


def _lock_all(dep: Deployment, stack: contextlib.ExitStack) -> None:
    """Take every host's lock, held until ``stack`` closes. The log says where a run
    waits, and where it was when it died."""
    for host in dep.hosts:
        dep.log(f"{host.name}: taking the deploy lock")
        stack.enter_context(Lock(host, dep.layout, dep.owner, dep.env.lock_wait))
        dep.log(f"{host.name}: locked")


def _prepare_all(dep: Deployment, observed: Sequence[Observed], artifact: Artifact,
                 release: str) -> None:
    for obs in observed:
        try:
            _prepare(dep, obs, artifact, release)
        except ForgeError as e:
            _discard(dep, observed, release, "failed before switch")
            raise DeployFailed(f"{e.message} — the live site was not touched",
                               hint=e.hint) from None


def _discard(dep: Deployment, observed: Sequence[Observed], release: str, why: str) -> None:
    """Best effort: mark a release that never went live bad and free its space
    (a full disk must not stay full because of the release that filled it)."""
    for o in observed:
        with contextlib.suppress(ForgeError):
            o.host.run(_log_script(o, release, "bad", dep.by, why)
                       + sh("rm", "-rf", "--", dep.layout.release(release)) + "\n"
                       + _log_script(o, release, "removed", dep.by, why), check=False)


def _preview(dep: Deployment, observed: Sequence[Observed], release: str) -> None:
    """Serve the release on the preview route and check it there: visitors see nothing."""
    pv = dep.env.preview
    checks = _preview_checks(dep, release)
    if pv is None or not checks:
        return
    dep.log(f"preview: checking {release} at {pv.url}")
    try:
        for obs in observed:
            _point(obs.host, dep.layout.link(pv.link), release)
        if pv.on_host:
            # Every host checks its own preview: one bad host stops them all.
            for obs in observed:
                outcome = health.run_checks(
                    checks, dep.policy, dep.log,
                    fetch=health.fetch_on(obs.host, dep.policy.request_timeout))
                if not outcome.ok:
                    outcome = health.Outcome(False, f"{obs.name}: {outcome.detail}",
                                             outcome.seconds)
                    break
        else:
            outcome = health.run_checks(checks, dep.policy, dep.log)
    except ForgeError as e:
        outcome = health.Outcome(False, e.message, 0.0)
    if not outcome.ok:
        for obs in observed:
            with contextlib.suppress(ForgeError):
                _record(obs, release, "bad", dep.by, "failed on the preview route")
        raise DeployFailed(f"the release failed its checks on the preview route "
                           f"({outcome.detail}); visitors never saw it",
                           hint="fix the release and deploy again")
    dep.log(f"preview: {outcome.detail} in {outcome.seconds:.1f}s")


class _SwitchFailed(Exception):
    """Raised by :func:`_switch_and_verify` after it put every host back it could."""

    def __init__(self, cause: ForgeError, unrestored: list[str]) -> None:
        super().__init__(cause.message)
        self.cause, self.unrestored = cause, unrestored


def _switch_and_verify(dep: Deployment, observed: Sequence[Observed], release: str,
                       after_switch: Sequence[str]) -> health.Outcome:
    """Switch every host to ``release``, refresh PHP, run hooks and checks; on any
    failure switch every switched host back to what it served before."""
    switched: list[Observed] = []
    try:
        for obs in observed:
            switched.append(obs)
            dep.log(f"{obs.name}: switching current to {release}")
            _switch(obs.host, dep.layout, release)
        switched_at = time.monotonic()
        for obs in observed:
            _php_refresh(dep, obs, release)
        for obs in observed:
            _hooks(dep, obs, "after_switch", after_switch, release, obs.current)
        checks = _checks(dep, release)
        if not checks:
            return health.Outcome(True, "not checked (no health checks configured)", 0.0)
        dep.log(f"health: checking {release}")
        outcome = health.run_checks(checks, dep.policy, dep.log, live=True)
        if not outcome.ok:
            raise DeployFailed(f"health checks failed: {outcome.detail}")
        dep.log(f"health: {outcome.detail} in {outcome.seconds:.2f}s")
        # What a visitor waits for: PHP refresh and after_switch hooks included.
        return health.Outcome(True, outcome.detail, time.monotonic() - switched_at)
    except ForgeError as e:
        unrestored = []
        for obs in switched:
            try:
                _switch(obs.host, dep.layout, obs.current)
                _php_refresh(dep, obs, obs.current)
            except ForgeError as back:
                dep.log(f"{obs.name}: switching back FAILED: {back}")
                unrestored.append(obs.name)
        raise _SwitchFailed(e, unrestored) from None


def _switch_all_and_check(dep: Deployment, observed: Sequence[Observed],
                          release: str) -> health.Outcome:
    try:
        return _switch_and_verify(dep, observed, release, dep.env.hooks.after_switch)
    except _SwitchFailed as f:
        for obs in observed:
            with contextlib.suppress(ForgeError):
                _record(obs, release, "bad", dep.by, "rolled back")
        back = observed[0].current or "(nothing: first deploy)"
        if f.unrestored:
            raise RollbackFailed(f"{f.cause.message}; switching back to {back} FAILED on "
                                 f"{', '.join(f.unrestored)}",
                                 hint="check the site now: forge-ci releases, then rollback",
                                 ) from None
        raise RolledBack(f"{f.cause.message}; rolled back to {back} on every host",
                         hint="the release is marked bad; fix it and deploy again") from None


def _finish(dep: Deployment, obs: Observed, release: str) -> None:
    """Mark the release live and prune, in one command, by the rule the plan showed."""
    dep.log(f"{obs.name}: recording {release} as live")
    script = _log_script(obs, release, "live", dep.by)
    dirs = sorted({*obs.dirs, release} - set(unfinished(obs.log, obs.dirs, obs.current)))
    victims = [r for r in prune_plan(obs.log, dirs, release, dep.env.keep_releases)
               if r != release]
    if victims:
        dep.log(f"{obs.name}: pruning {', '.join(victims)}")
        script += sh("rm", "-rf", "--", *(dep.layout.release(r) for r in victims),
                     *(dep.layout.manifest(r) for r in victims)) + "\n"
        script += "".join(_log_script(obs, r, "removed", dep.by, "pruned") for r in victims)
    script += stage_script(dep.layout.release(release))
    obs.host.check(obs.host.run(script, check=False), "recording the live release")


# -- rollback ----------------------------------------------------------------

def rollback(dep: Deployment, to: str | None, *, dry_run: bool = False) -> Result:
    stack = contextlib.ExitStack()
    with stack:
        if not dry_run:
            _lock_all(dep, stack)
        observed = [observe(h, dep.layout) for h in dep.hosts]
        target = to or observed[0].log.previous_good(observed[0].current)
        if target is None:
            raise UsageError("there is no earlier good release to roll back to",
                             hint="see forge-ci releases ENV; pass --to RELEASE")
        for obs in observed:
            if target not in obs.dirs:
                raise UsageError(f"release {target} is not on {obs.name}",
                                 hint="see forge-ci releases ENV for what can be restored")
            if obs.log.states.get(target) in ("preparing", "removed", None):
                raise UsageError(f"release {target} on {obs.name} never finished preparing")
        checks = _checks(dep, target)
        plan = RollbackPlan(dep.environment, target,
                            tuple((o.name, o.current) for o in observed),
                            tuple(f"{c.url} -> {c.status}" for c in checks))
        previous = observed[0].current
        if dry_run:
            return Result(target, previous, dep.env.url, plan)
        dep.log(plan.render())
        if all(o.current == target for o in observed):
            return Result(target, previous, dep.env.url, plan, "already live")
        for obs in observed:
            try:
                _php_probe(dep, obs, target)
            except ForgeError as e:
                raise DeployFailed(f"{e.message} — nothing was switched", hint=e.hint) from None
        try:
            outcome = _switch_and_verify(dep, observed, target, ()).detail
        except _SwitchFailed as f:
            if f.unrestored:
                raise RollbackFailed(f"{f.cause.message}; restoring {previous} failed on "
                                     f"{', '.join(f.unrestored)}") from None
            raise DeployFailed(f"release {target}: {f.cause.message}; {previous} stays live",
                               hint="pick another release with --to") from None
        for obs in observed:
            _record_live(dep, obs, target, functools.partial(_record_rollback, dep, obs, target))
        return Result(target, previous, dep.env.url, plan, outcome)


def _record_rollback(dep: Deployment, obs: Observed, target: str) -> None:
    dep.log(f"{obs.name}: recording {target} as live")
    if obs.current and obs.current != target:
        _record(obs, obs.current, "bad", dep.by, f"rolled back to {target}")
    _record(obs, target, "live", dep.by, "rollback")


def _record_live(dep: Deployment, obs: Observed, release: str,
                 record: Callable[[], None]) -> None:
    """Run ``record`` for a release every host serves and that passed its checks.

    If the host cannot be reached any more, the site is still right; failing now
    would report "nothing changed" (exit 1) for a site that did change, so warn.
    The next run works from what is live; only the log lags (the release shows as
    prepared) and old releases wait for the next prune.
    """
    try:
        record()
    except ForgeError as e:
        (dep.warn or dep.log)(f"{obs.name}: {release} is live and passed its checks, but "
                              f"recording that failed: {e.message}")
