"""Plan a deploy or rollback as data: the steps that run, from observed facts.

:func:`plan_deploy` and :func:`plan_rollback` are pure: facts
(:class:`~forge_ci.deploy.observe.Observed`) in, steps
(:mod:`forge_ci.deploy.steps`) out. A plan is a few phases, each holding every
host's ordered steps; :mod:`forge_ci.deploy.execute` carries them out and does
nothing else, and ``--dry-run`` prints them. A deploy runs::

    prepare (every host) -> snapshot (backup.before_deploy: the database, on the backup
    host) -> migrate (hooks.migrate, once, on the first host; maintenance file on every
    host while it runs) -> preview -> for each batch: switch, refresh, after_switch,
    checks on each host of the batch -> checks through the site URL -> finish (record,
    prune, stage the next base)

and on failure ``discard`` (before any switch) or ``undo`` (every switched host back).
With ``hooks.migrate_at: after_switch`` the migrations run first in the first host's
after_switch steps instead, the maintenance file going up just before each switch.
``strategy: together`` makes one batch of every host; ``strategy: rolling`` makes
batches of ``rolling.batch`` hosts, so hosts behind a load balancer switch a few at
a time while the others keep serving.

With several hosts (or a ``check_address``), every check aimed at the site URL also
runs on each host against its own web server (curl on the host, connected to
``check_address``, default 127.0.0.1, at the URL's port): a balancer in front
cannot hide a broken host. Through the site URL the checks must then pass
:func:`public_rounds` rounds in a row.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forge_ci.build.manifest import Manifest, diff
from forge_ci.config.models import EnvironmentConfig, HealthCheck, RollingConfig
from forge_ci.deploy import health, php_refresh
from forge_ci.deploy.observe import Observed
from forge_ci.deploy.releases import (
    Info,
    ReleaseLog,
    event,
    new_release_id,
    prune_plan,
    unfinished,
)
from forge_ci.deploy.ship import STAGED_PREFIX
from forge_ci.deploy.steps import (
    MAINTENANCE_FILE,
    Adopt,
    HostSteps,
    LinkShared,
    MaintenanceOff,
    MaintenanceOn,
    MakeDirs,
    Phase,
    PointLink,
    ProbePhp,
    Record,
    RefreshPhp,
    RemoveReleases,
    RemoveStaged,
    RestoreDatabase,
    RunHooks,
    Ship,
    StageNextBase,
    Step,
    Switch,
    TakeSnapshot,
    WriteManifest,
)
from forge_ci.errors import DeployFailed, UsageError


def _phase_lines(name: str, phase: Phase) -> list[str]:
    out: list[str] = []
    for h in phase:
        if h.steps:
            out.append(f"  {name} {h.host}:")
            out += [f"    {s.describe()}" for s in h.steps]
    return out


def _check_text(c: HealthCheck) -> str:
    return f"{c.url} -> {c.status}" + (f" containing {c.contains!r}" if c.contains else "")


# -- deploy ------------------------------------------------------------------

@dataclass(frozen=True)
class DeployPlan:
    environment: str
    release: str
    current: tuple[tuple[str, str | None], ...]  # (host, live release) as observed
    prepare: Phase
    preview: Phase
    preview_checks: tuple[HealthCheck, ...]
    preview_on_host: bool
    switch: Phase
    refresh: Phase
    after_switch: Phase
    checks: tuple[HealthCheck, ...]
    finish: Phase
    undo: Phase  # every switched host back, if anything fails after a switch
    discard: Phase  # if preparing fails: the release is marked bad and removed
    rejected: Phase  # if the preview checks fail
    rolled_back: Phase  # after ``undo``
    notes: tuple[str, ...] = ()
    strategy: str = "together"
    batches: tuple[tuple[str, ...], ...] = ()  # hosts switched and checked together
    # (host, address): the checks aimed at the site (and the preview) run on each
    # host against its own web server at that address; empty: only through the URL.
    check_hosts: tuple[tuple[str, str], ...] = ()
    host_checks: tuple[HealthCheck, ...] = ()
    rounds: int = 1  # passing rounds in a row needed through the site URL
    snapshot: Phase = ()  # the database snapshot, after prepare (backup.before_deploy)
    migrate: Phase = ()  # hooks.migrate before the switch, inside its maintenance window

    @property
    def previous(self) -> str | None:
        return self.current[0][1] if self.current else None

    def to_json(self) -> dict[str, Any]:
        phases = {"prepare": self.prepare, "snapshot": self.snapshot, "migrate": self.migrate,
                  "preview": self.preview, "switch": self.switch,
                  "refresh": self.refresh, "after_switch": self.after_switch,
                  "finish": self.finish, "undo": self.undo, "discard": self.discard}
        return {
            "environment": self.environment, "release": self.release,
            "hosts": [{"host": h, "current": c,
                       **{k: [s.to_json() for s in _steps(p, h)] for k, p in phases.items()}}
                      for h, c in self.current],
            "preview_checks": [_check_text(c) for c in self.preview_checks],
            "checks": [_check_text(c) for c in self.checks], "notes": list(self.notes),
            "strategy": self.strategy, "batches": [list(b) for b in self.batches],
            "host_checks": {"hosts": [{"host": h, "address": a} for h, a in self.check_hosts],
                            "checks": [_check_text(c) for c in self.host_checks]},
            "rounds": self.rounds}

    def render(self) -> str:
        out = [f"deploy {self.release} to {self.environment}:"]
        out += [f"  {h}: live {c or '(none)'}" for h, c in self.current]
        out += _phase_lines("prepare", self.prepare)
        out += _phase_lines("snapshot", self.snapshot)
        out += _phase_lines("migrate", self.migrate)
        out += _phase_lines("preview", self.preview)
        where = " on each host" if self.check_hosts or self.preview_on_host else ""
        out += [f"  preview check{where}: {_check_text(c)}" for c in self.preview_checks]
        address = dict(self.check_hosts)
        for i, batch in enumerate(self.batches, 1):
            if len(self.batches) > 1:
                out.append(f"  batch {i}/{len(self.batches)} ({self.strategy}): "
                           f"{', '.join(batch)}")
            out += _phase_lines("switch", _only(self.switch, batch))
            out += _phase_lines("refresh", _only(self.refresh, batch))
            out += _phase_lines("after switch", _only(self.after_switch, batch))
            out += [f"  check on {h} (its web server at {address[h]}): {_check_text(c)}"
                    for h in batch if h in address for c in self.host_checks]
        rounds = f" ({self.rounds} passing rounds in a row)" if self.rounds > 1 else ""
        out += [f"  check: {_check_text(c)}{rounds}" for c in self.checks]
        out += _phase_lines("finish", self.finish)
        out += _phase_lines("on failure after a switch", self.undo)
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def _steps(phase: Phase, host: str) -> tuple[Step, ...]:
    # A phase may visit a host more than once (migrate: every host's maintenance
    # file goes up before the migration runs on the first).
    return tuple(s for h in phase if h.host == host for s in h.steps)


def _only(phase: Phase, hosts: Sequence[str]) -> Phase:
    """The part of ``phase`` on ``hosts``."""
    return tuple(h for h in phase if h.host in hosts)


def batches(config: EnvironmentConfig, hosts: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The hosts in the order they switch: all at once, or ``rolling.batch`` at a time."""
    if config.strategy != "rolling":
        return (tuple(hosts),)
    size = (config.rolling or RollingConfig()).batch
    return tuple(tuple(hosts[i:i + size]) for i in range(0, len(hosts), size))


def check_hosts(config: EnvironmentConfig,
                hosts: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(host, address) for checking each host on its own, or () when the site URL
    is enough: a single host without ``check_address``, or no url to check."""
    if config.url is None:
        return ()
    if len(config.hosts) < 2 and not any(h.check_address for h in config.hosts):
        return ()
    given = {h.label: h.check_address for h in config.hosts}
    return tuple((h, given.get(h) or "127.0.0.1") for h in hosts)


def host_checks(config: EnvironmentConfig,
                checks: Sequence[HealthCheck]) -> tuple[HealthCheck, ...]:
    """The checks aimed at the site URL: those each host answers for itself."""
    if config.url is None:
        return ()
    base = config.url.rstrip("/")
    return tuple(c for c in checks if c.url == base or c.url.startswith(base + "/"))


def public_rounds(config: EnvironmentConfig) -> int:
    """Passing rounds in a row needed through the site URL: two per host when there
    are several, so that a round-robin balancer has sent each check to every host
    even with other visitors' requests in between."""
    return 2 * len(config.hosts) if len(config.hosts) > 1 else 1


def release_id(digest: str, observed: Sequence[Observed], now: float | None = None) -> str:
    """A new release id no host has used."""
    taken = sorted({d for o in observed for d in o.dirs} | {r for o in observed
                                                           for r in o.log.order})
    return new_release_id(digest, now, taken=taken)


def shared_paths(config: EnvironmentConfig) -> tuple[str, ...]:
    # A rendered .env belongs to its release (rollback brings the old one back).
    return tuple(p for p in config.shared if not (p == ".env" and config.dotenv))


def _per_release(config: EnvironmentConfig) -> tuple[str, ...]:
    """Paths a release never inherits from its base: they are added after shipping."""
    out = list(shared_paths(config))
    if config.dotenv:
        out.append(".env")
    # forge's own per-release files are never inherited, whatever today's settings:
    # an old release's marker would claim to be this one (marker: false).
    out.append(health.MARKER_PATH)
    out.append(php_refresh.SCRIPT)  # left by a killed run
    out.append(MAINTENANCE_FILE)  # likewise
    return tuple(out)


def _generated(config: EnvironmentConfig, new: Manifest) -> tuple[str, ...]:
    out: list[str] = []
    if config.dotenv:
        out.append(".env")
    if config.marker and "web" in new.entries:
        out.append(health.MARKER_PATH)
    return tuple(out)


def _ship(obs: Observed, config: EnvironmentConfig, new: Manifest, release: str) -> Ship:
    base = obs.current if obs.current and obs.current_manifest else None
    generated = _generated(config, new)
    if base is None:
        return Ship(release, None, tuple(sorted(new.entries)), (), 0, generated)
    d = diff(obs.current_manifest, new)
    remove = tuple(sorted(set(d.remove) | set(_per_release(config))))
    return Ship(release, base, tuple(d.send), remove, len(new.entries) - len(d.send), generated)


def checks_for(config: EnvironmentConfig, release: str) -> tuple[HealthCheck, ...]:
    """The release marker (when there is a url), then the configured checks."""
    checks: list[HealthCheck] = []
    if config.marker and config.url:
        checks.append(health.marker_check(config.url, release))
    return tuple(checks) + config.health


def preview_checks(config: EnvironmentConfig, release: str) -> tuple[HealthCheck, ...]:
    """The checks, aimed at the preview route instead of the site."""
    pv, url = config.preview, config.url
    if pv is None or url is None:
        return ()
    base, new = url.rstrip("/"), pv.url.rstrip("/")
    return tuple(c.model_copy(update={"url": new + c.url[len(base):]})
                 for c in checks_for(config, release) if c.url.startswith(base))


def names_file(path: str) -> bool:
    """The rule for a shared path: one whose last part has a dot (``.env``,
    ``config/host.php``) names a file; any other (``web/app/uploads``) a directory."""
    return "." in posixpath.basename(path)


def check_shared(observed: Sequence[Observed], paths: Sequence[str], new: Manifest,
                 adopted: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse, before anything changes, a shared path that some hosts have and another
    lacks (it would be created empty there), or a file that no host has and the build
    does not bring (a directory is created empty; a file cannot be)."""
    for p in paths:
        have = [o.name for o in observed if p in o.shared or p in adopted.get(o.name, ())]
        lacking = [o.name for o in observed if o.name not in have]
        if have and lacking:
            raise DeployFailed(
                f"shared path {p} is missing on {', '.join(lacking)} but present on "
                f"{', '.join(have)}: that host would serve the release without it",
                hint=f"copy shared/{p} to {', '.join(lacking)} (or remove it from shared) "
                     "and deploy again; `forge-ci doctor ENV` lists every such path")
        if not have and names_file(p) and p not in new.entries:
            raise DeployFailed(
                f"shared file {p} is missing on every host ({', '.join(lacking)}) and the "
                "build does not contain it",
                hint=f"create shared/{p} in the deploy path on every host, then deploy again")


def adoptions(observed: Sequence[Observed], config: EnvironmentConfig,
              adopt: bool) -> dict[str, tuple[str, ...]]:
    """What each host's existing (not forge-deployed) site has that moves into shared/.

    A site in the deploy path whose media would be left behind is refused unless
    ``adopt`` (``deploy --adopt``) asks to move them."""
    paths = shared_paths(config)
    out: dict[str, tuple[str, ...]] = {}
    for o in observed:
        if not o.site_paths:
            continue
        stray = [p for p in o.site_paths if p not in paths]
        if stray:
            raise DeployFailed(
                f"{o.name}: the deploy path holds a site forge did not deploy, and its "
                f"{', '.join(stray)} is not a shared path: it would be left behind",
                hint=f"add {', '.join(stray)} to shared in forge.yml, then deploy with "
                     "--adopt (try --adopt --dry-run first)")
        clash = [p for p in o.site_paths if p in o.shared]
        if clash:
            raise DeployFailed(
                f"{o.name}: both the existing site and shared/ hold {', '.join(clash)}",
                hint="merge them by hand into shared/ and remove the site's copy")
        if not adopt:
            raise DeployFailed(
                f"{o.name}: the deploy path holds a site forge did not deploy; its "
                f"{', '.join(o.site_paths)} would be left behind",
                hint="deploy with --adopt to move them into shared/ (see what moves with "
                     "--adopt --dry-run first)")
        out[o.name] = o.site_paths
    return out


def _prepare_steps(obs: Observed, config: EnvironmentConfig, new: Manifest,
                   release: str, origin: Info = (),
                   adopt: tuple[str, ...] = ()) -> tuple[Step, ...]:
    steps: list[Step] = [MakeDirs()]
    if obs.maintenance:
        steps.append(MaintenanceOff("left by an earlier run"))
    if adopt:
        steps.append(Adopt(adopt))
    keep = STAGED_PREFIX + (obs.current or "-")
    stale_staged = tuple(n for n in obs.staged if n != keep)
    if stale_staged:
        steps.append(RemoveStaged(stale_staged))
    stale = unfinished(obs.log, obs.dirs, obs.current)
    # Each removal is logged before it happens: a run killed in between leaves a
    # directory logged "removed", which the next run removes as unfinished.
    steps += [Record(r, "removed", "unfinished") for r in stale if r in obs.log.states]
    present = tuple(r for r in stale if r in obs.dirs)
    if present:
        steps.append(RemoveReleases(present, "unfinished"))
    steps += [Record(release, "preparing", info=origin), WriteManifest(release),
              _ship(obs, config, new, release), ProbePhp(release),
              LinkShared(release, shared_paths(config))]
    if config.hooks.before_switch:
        steps.append(RunHooks("before_switch", release, obs.current,
                              tuple(config.hooks.before_switch)))
    steps.append(Record(release, "prepared"))
    return tuple(steps)


def _prune_victims(obs: Observed, release: str, keep: int) -> tuple[str, ...]:
    """What pruning removes once ``release`` is live, by the log as it will read."""
    stale = unfinished(obs.log, obs.dirs, obs.current)
    log = ReleaseLog([*obs.log.events,
                      *(event(r, "removed") for r in stale if r in obs.log.states),
                      event(release, "prepared"), event(release, "live")])
    dirs = sorted({*obs.dirs, release} - set(stale))
    return tuple(r for r in prune_plan(log, dirs, release, keep) if r != release)


def _finish_steps(obs: Observed, release: str, keep: int) -> tuple[Step, ...]:
    steps: list[Step] = [Record(release, "live")]
    if obs.current and obs.current != release:
        steps.append(Record(obs.current, "previous", f"replaced by {release}"))
    victims = _prune_victims(obs, release, keep)
    if victims:  # logged first, as in _prepare_steps
        steps += [Record(r, "removed", "pruned") for r in victims]
        steps.append(RemoveReleases(victims, "pruned", later=True))
    steps.append(StageNextBase(release))
    return tuple(steps)


def _undo(observed: Sequence[Observed], maintenance: bool = False) -> Phase:
    off: tuple[Step, ...] = (MaintenanceOff("the run failed"),) if maintenance else ()
    return tuple(HostSteps(o.name, (*off, Switch(o.current), RefreshPhp(o.current)))
                 for o in observed)


def backup_host(config: EnvironmentConfig, observed: Sequence[Observed]) -> str:
    """The host holding the database: ``backup.host``, else the first (as backups)."""
    wanted = config.backup.host if config.backup else None
    for h, o in zip(config.hosts, observed, strict=False):
        if h.host == wanted:
            return o.name
    return observed[0].name


def _maintenance(config: EnvironmentConfig) -> bool:
    return config.hooks.maintenance and bool(config.hooks.migrate)


def _snapshot_phase(config: EnvironmentConfig, observed: Sequence[Observed],
                    release: str) -> Phase:
    if config.backup is None or not config.backup.before_deploy:
        return ()
    return (HostSteps(backup_host(config, observed), (TakeSnapshot(release),)),)


def _migrate_phase(config: EnvironmentConfig, observed: Sequence[Observed],
                   release: str) -> Phase:
    """Before the switch: every host's live release in maintenance, the migrations on
    the first host, every maintenance file removed."""
    hooks = config.hooks
    if not hooks.migrate or hooks.migrate_at != "before_switch":
        return ()
    first = observed[0]
    run = HostSteps(first.name, (RunHooks("migrate", release, first.current, hooks.migrate),))
    if not _maintenance(config):
        return (run,)
    on = tuple(HostSteps(o.name, (MaintenanceOn(o.current),)) for o in observed if o.current)
    off = tuple(HostSteps(o.name, (MaintenanceOff(),)) for o in observed)
    return (*on, run, *off)


def _switch_phase(config: EnvironmentConfig, observed: Sequence[Observed],
                  release: str) -> Phase:
    late = config.hooks.migrate_at == "after_switch" and _maintenance(config)
    on: tuple[Step, ...] = (MaintenanceOn(release),) if late else ()
    return tuple(HostSteps(o.name, (*on, Switch(release))) for o in observed)


def _after_switch_phase(config: EnvironmentConfig, observed: Sequence[Observed],
                        release: str) -> Phase:
    hooks = config.hooks
    out = []
    for i, o in enumerate(observed):
        steps: list[Step] = []
        if hooks.migrate and hooks.migrate_at == "after_switch":
            if i == 0:
                steps.append(RunHooks("migrate", release, o.current, hooks.migrate))
            if _maintenance(config):
                steps.append(MaintenanceOff())
        if hooks.after_switch:
            steps.append(RunHooks("after_switch", release, o.current, hooks.after_switch))
        out.append(HostSteps(o.name, tuple(steps)))
    return tuple(out)


def _notes(config: EnvironmentConfig, new: Manifest) -> tuple[str, ...]:
    if config.preview:
        notes = [f"preview route: checks run at {config.preview.url} before the switch; "
                 "after it the live site is checked again, with automatic rollback"]
    else:
        notes = ["no preview route: checks run after the switch, with automatic rollback"]
    if config.strategy == "rolling":
        notes.append(f"rolling: {(config.rolling or RollingConfig()).batch} host(s) at a "
                     "time; a failure sends every switched host back and stops, the "
                     "others are never switched")
    if check_hosts(config, [h.label for h in config.hosts]):
        notes.append("every host is checked on its own web server (curl on the host, at "
                     "check_address, default 127.0.0.1) as well as through url")
    elif len(config.hosts) > 1:
        notes.append("no url: the hosts cannot be checked one by one")
    if not config.url and not config.health:
        notes.append("no url and no health checks: the switch is not verified over HTTP")
    elif config.marker and not config.url:
        notes.append("marker check needs url: skipped")
    if config.marker and "web" not in new.entries:
        notes.append("the build has no web/ directory: the release marker cannot be served")
    php = config.php
    if php.refresh == "opcache-reset":
        notes.append(f"PHP refresh: opcache reset in the FPM pool at {php.fpm_socket} on each "
                     "host, through FastCGI (checked before the switch)")
    elif php.refresh == "command":
        notes.append("PHP refresh: reload_command on each host")
    return tuple(notes)


def plan_deploy(environment: str, config: EnvironmentConfig, observed: Sequence[Observed],
                new: Manifest, release: str, *, origin: Info = (),
                adopt: bool = False) -> DeployPlan:
    """Every step of deploying ``new`` as ``release`` to the observed hosts.

    ``origin``: commit, subject and run, logged with the release. ``adopt``: move an
    existing site's shared paths into shared/ (refused without it). Raises
    :class:`DeployFailed` for a shared path missing on some hosts (see
    :func:`check_shared`): nothing has changed yet."""
    adopted = adoptions(observed, config, adopt)
    check_shared(observed, shared_paths(config), new, adopted)
    pv_checks = preview_checks(config, release)
    preview: Phase = ()
    if config.preview is not None and pv_checks:
        preview = tuple(HostSteps(o.name, (PointLink(config.preview.link, release),))
                        for o in observed)
    maintenance = _maintenance(config)
    off: tuple[Step, ...] = (MaintenanceOff("the run failed"),) if maintenance else ()
    return DeployPlan(
        environment=environment, release=release,
        current=tuple((o.name, o.current) for o in observed),
        prepare=tuple(HostSteps(o.name, _prepare_steps(o, config, new, release, origin,
                                                       adopted.get(o.name, ())))
                      for o in observed),
        preview=preview, preview_checks=pv_checks if preview else (),
        preview_on_host=bool(config.preview and config.preview.on_host),
        switch=_switch_phase(config, observed, release),
        refresh=tuple(HostSteps(o.name, (RefreshPhp(release),)) for o in observed),
        after_switch=_after_switch_phase(config, observed, release),
        checks=checks_for(config, release),
        finish=tuple(HostSteps(o.name, _finish_steps(o, release, config.keep_releases))
                     for o in observed),
        undo=_undo(observed, maintenance and config.hooks.migrate_at == "after_switch"),
        discard=tuple(HostSteps(o.name, (*off, Record(release, "bad", "failed before switch"),
                                         Record(release, "removed", "failed before switch"),
                                         RemoveReleases((release,), "failed")))
                      for o in observed),
        rejected=_mark_bad(observed, release, "failed on the preview route"),
        rolled_back=_mark_bad(observed, release, "rolled back"),
        notes=_notes(config, new),
        strategy=config.strategy,
        batches=batches(config, [o.name for o in observed]),
        check_hosts=check_hosts(config, [o.name for o in observed]),
        host_checks=host_checks(config, checks_for(config, release)),
        rounds=public_rounds(config),
        snapshot=_snapshot_phase(config, observed, release),
        migrate=_migrate_phase(config, observed, release),
    )


def _mark_bad(observed: Sequence[Observed], release: str, why: str) -> Phase:
    return tuple(HostSteps(o.name, (Record(release, "bad", why),)) for o in observed)


# -- rollback ----------------------------------------------------------------

@dataclass(frozen=True)
class RollbackPlan:
    environment: str
    target: str
    current: tuple[tuple[str, str | None], ...]
    probe: Phase
    switch: Phase
    refresh: Phase
    checks: tuple[HealthCheck, ...]
    finish: Phase
    undo: Phase
    forced: bool = False  # --force: no health gate
    cleanup: Phase = ()  # maintenance files an earlier run left
    database: Phase = ()  # --with-database: after the switch, before the checks

    @property
    def previous(self) -> str | None:
        return self.current[0][1] if self.current else None

    @property
    def already_live(self) -> bool:
        return all(c == self.target for _, c in self.current)

    def to_json(self) -> dict[str, Any]:
        phases = {"cleanup": self.cleanup, "probe": self.probe, "switch": self.switch,
                  "refresh": self.refresh, "database": self.database,
                  "finish": self.finish, "undo": self.undo}
        return {"environment": self.environment, "target": self.target,
                "hosts": [{"host": h, "current": c,
                           **{k: [s.to_json() for s in _steps(p, h)] for k, p in phases.items()}}
                          for h, c in self.current],
                "checks": [f"{c.url} -> {c.status}" for c in self.checks],
                "forced": self.forced}

    def render(self) -> str:
        out = [f"roll back {self.environment} to {self.target}:"]
        out += [f"  {h}: {c or '(none)'} -> {self.target}" for h, c in self.current]
        if self.already_live:
            out.append(f"  {self.target} is live on every host: "
                       + ("only the database is restored" if self.database else "nothing to do"))
        for name, phase in (("cleanup", self.cleanup), ("probe", self.probe),
                            ("switch", self.switch), ("refresh", self.refresh),
                            ("database", self.database)):
            out += _phase_lines(name, phase)
        out += [f"  check: {c.url} -> {c.status}" for c in self.checks]
        if self.forced:
            out.append("  FORCED: no health checks; the target goes live whatever it serves")
        out += _phase_lines("finish", self.finish)
        out += _phase_lines("on failure", self.undo)
        return "\n".join(out)


def rollback_target(observed: Sequence[Observed], to: str | None) -> str:
    """``to``, or the newest good release before the live one; refused unless every
    host holds it finished."""
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
    return target


def _record_rollback(obs: Observed, target: str, forced: bool) -> tuple[Step, ...]:
    # A manual rollback says nothing bad about the release it leaves: rolling back
    # and forward again leaves a good release good.
    how = ", forced" if forced else ""
    steps: list[Step] = []
    if obs.current and obs.current != target:
        steps.append(Record(obs.current, "rolled_back", f"rolled back to {target}{how}"))
    steps.append(Record(target, "live", f"rollback{how}"))
    return tuple(steps)


def _restore_phase(config: EnvironmentConfig, observed: Sequence[Observed],
                   target: str) -> Phase:
    snapshot = observed[0].log.snapshots.get(target)
    if snapshot is None:
        raise UsageError(f"release {target} carries no database snapshot",
                         hint="forge-ci releases ENV shows which releases carry one "
                              "(backup.before_deploy: true takes one with each deploy)")
    return (HostSteps(backup_host(config, observed), (RestoreDatabase(snapshot, target),)),)


def plan_rollback(environment: str, config: EnvironmentConfig, observed: Sequence[Observed],
                  to: str | None, *, force: bool = False,
                  with_database: bool = False) -> RollbackPlan:
    """Switch back to ``to`` (or the previous good release). ``force``: without the
    health gate, for a site down for another reason (database, DNS). ``with_database``:
    also restore the database snapshot recorded with ``to``, after the switch."""
    target = rollback_target(observed, to)
    current = tuple((o.name, o.current) for o in observed)
    cleanup = tuple(HostSteps(o.name, (MaintenanceOff("left by an earlier run"),))
                    for o in observed if o.maintenance)
    database = _restore_phase(config, observed, target) if with_database else ()
    if all(o.current == target for o in observed):
        return RollbackPlan(environment, target, current, (), (), (),
                            () if force else checks_for(config, target), (), (), force,
                            cleanup, database)
    return RollbackPlan(
        environment, target, current,
        probe=tuple(HostSteps(o.name, (ProbePhp(target),)) for o in observed),
        switch=tuple(HostSteps(o.name, (Switch(target),)) for o in observed),
        refresh=tuple(HostSteps(o.name, (RefreshPhp(target),)) for o in observed),
        checks=() if force else checks_for(config, target),
        finish=tuple(HostSteps(o.name, _record_rollback(o, target, force)) for o in observed),
        undo=_undo(observed),
        forced=force, cleanup=cleanup, database=database,
    )

