"""Observe each target, then plan a deploy or rollback as data: the steps that run.

:func:`observe` only reads. :func:`plan_deploy` and :func:`plan_rollback` are pure:
facts in, steps out. A plan is a few phases, each holding every host's ordered
steps; :mod:`forge_ci.deploy.execute` carries them out and does nothing else, and
``--dry-run`` prints them. A deploy runs::

    prepare (every host) -> preview -> switch (every host) -> refresh -> after_switch
    -> checks -> finish (record, prune, stage the next base)

and on failure ``discard`` (before any switch) or ``undo`` (every switched host back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from forge_ci.build.manifest import Manifest, diff
from forge_ci.config.models import EnvironmentConfig, HealthCheck
from forge_ci.deploy import health, php_refresh
from forge_ci.deploy.releases import (
    Layout,
    ReleaseLog,
    State,
    event,
    new_release_id,
    prune_plan,
    unfinished,
)
from forge_ci.errors import ArtifactError, ConnectError, RemoteCommandError, UsageError
from forge_ci.remote.base import Host, sh

REQUIRED_TOOLS = ("tar", "cp", "flock", "xargs", "mv", "ln", "readlink", "cat")
STAGED_PREFIX = ".forge-base-"


@dataclass(frozen=True)
class Observed:
    """What a target looks like now: facts only, no connection."""

    name: str
    current: str | None = None
    log: ReleaseLog = field(default_factory=ReleaseLog)
    dirs: tuple[str, ...] = ()  # release directories
    staged: tuple[str, ...] = ()  # staged base copies (.forge-base-*) in releases/
    current_manifest: Manifest | None = None


def _observe_script(layout: Layout) -> str:
    # One round trip: NUL-separated fields (the log and manifests never contain NUL).
    tools = " ".join(REQUIRED_TOOLS)
    return f"""\
cd {sh(layout.root)} 2>/dev/null || {{ printf 'absent\\0'; exit 0; }}
printf 'present\\0'
for t in {tools}; do command -v $t >/dev/null || printf '%s ' $t; done; printf '\\0'
if [ -e current ] && [ ! -L current ]; then printf notlink; fi; printf '\\0'
cur=$(readlink current 2>/dev/null); printf '%s\\0' "$cur"
ls -1A releases 2>/dev/null; printf '\\0'
cat .forge/log.jsonl 2>/dev/null; printf '\\0'
[ -n "$cur" ] && cat ".forge/manifests/${{cur##*/}}.json" 2>/dev/null; printf '\\0'
"""


def observe(host: Host, layout: Layout) -> Observed:
    fields = host.run(_observe_script(layout)).stdout.split(b"\0")
    if fields[0] != b"present":
        return Observed(host.name)
    missing, notlink, link, listing, log, manifest = (fields + [b""] * 7)[1:7]
    if missing.strip():
        raise ConnectError(f"{host.name} lacks {missing.decode().strip()}",
                           hint="install coreutils, tar and util-linux on the server")
    if notlink:
        raise RemoteCommandError(
            f"{layout.current} on {host.name} exists but is not a symlink",
            hint="move that directory away; forge manages current as a link to a release")
    current = link.decode().rstrip("/").split("/")[-1] or None
    parsed = None
    if current and manifest:
        try:
            parsed = Manifest.from_bytes(manifest, source=f"{host.name}:{layout.manifest(current)}")
        except ArtifactError:
            parsed = None  # a damaged stored manifest only costs a full send
    names = sorted(listing.decode().splitlines())
    return Observed(host.name, current, ReleaseLog.parse(log),
                    tuple(n for n in names if not n.startswith(".")),
                    tuple(n for n in names if n.startswith(STAGED_PREFIX)), parsed)


# -- steps -------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One operation on one host. ``op`` names it in --json output."""

    op: ClassVar[str] = ""

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.op}({args})"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class MakeDirs(Step):
    """releases/, shared/ and the manifests directory."""

    op: ClassVar[str] = "make_dirs"

    def describe(self) -> str:
        return "create releases/, shared/, .forge/manifests/"


@dataclass(frozen=True)
class RemoveStaged(Step):
    """Staged base copies of anything but the live release are stale."""

    op: ClassVar[str] = "remove_staged"
    names: tuple[str, ...]

    def describe(self) -> str:
        return f"remove stale staged copies {', '.join(self.names)}"


@dataclass(frozen=True)
class RemoveReleases(Step):
    """Delete release directories and their stored manifests."""

    op: ClassVar[str] = "remove_releases"
    releases: tuple[str, ...]
    why: str

    def describe(self) -> str:
        return f"remove {self.why} releases {', '.join(self.releases)}"


@dataclass(frozen=True)
class Record(Step):
    """Append one event to the release log."""

    op: ClassVar[str] = "record"
    release: str
    state: State
    note: str = ""

    def describe(self) -> str:
        return f"log {self.release} {self.state}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class WriteManifest(Step):
    op: ClassVar[str] = "write_manifest"
    release: str

    def describe(self) -> str:
        return f"store the manifest of {self.release}"


@dataclass(frozen=True)
class Ship(Step):
    """Create the release: hard-link ``base`` (the live release) minus ``remove``,
    then send ``send`` and the ``generated`` files; without a base, send everything."""

    op: ClassVar[str] = "ship"
    release: str
    base: str | None
    send: tuple[str, ...]
    remove: tuple[str, ...]
    linked: int
    generated: tuple[str, ...]

    def describe(self) -> str:
        return (f"ship {self.release}: send {len(self.send)} entries, hard-link {self.linked}"
                f" from {self.base or '(nothing)'}, unlink {len(self.remove)}"
                + (f", write {', '.join(self.generated)}" if self.generated else ""))

    def to_json(self) -> dict[str, Any]:
        # Paths can number in the tens of thousands: counts are what a reader needs.
        return {"op": self.op, "release": self.release, "base": self.base,
                "send": len(self.send), "link": self.linked, "remove": len(self.remove),
                "generated": list(self.generated)}


@dataclass(frozen=True)
class ProbePhp(Step):
    op: ClassVar[str] = "probe_php"
    release: str

    def describe(self) -> str:
        return f"check the PHP pool can be refreshed from {self.release}"


@dataclass(frozen=True)
class LinkShared(Step):
    op: ClassVar[str] = "link_shared"
    release: str
    paths: tuple[str, ...]

    def describe(self) -> str:
        return f"link shared paths into {self.release}: {', '.join(self.paths) or '(none)'}"


@dataclass(frozen=True)
class RunHooks(Step):
    op: ClassVar[str] = "run_hooks"
    phase: str
    release: str
    previous: str | None
    commands: tuple[str, ...]

    def describe(self) -> str:
        return f"run {self.phase} hooks in {self.release}: " + "; ".join(self.commands)


@dataclass(frozen=True)
class PointLink(Step):
    """Point a link beside ``current`` (the preview route) at a release."""

    op: ClassVar[str] = "point_link"
    link: str
    release: str

    def describe(self) -> str:
        return f"point {self.link} at {self.release}"


@dataclass(frozen=True)
class Switch(Step):
    """Point ``current`` at ``release``; None moves it aside (a first deploy undone)."""

    op: ClassVar[str] = "switch"
    release: str | None

    def describe(self) -> str:
        return f"switch current to {self.release}" if self.release else "move current aside"


@dataclass(frozen=True)
class RefreshPhp(Step):
    op: ClassVar[str] = "refresh_php"
    release: str | None

    def describe(self) -> str:
        return f"refresh PHP for {self.release or '(nothing)'}"


@dataclass(frozen=True)
class StageNextBase(Step):
    """In the background, hard-link a copy of ``release`` for the next deploy."""

    op: ClassVar[str] = "stage_next_base"
    release: str

    def describe(self) -> str:
        return f"stage a copy of {self.release} for the next deploy (background)"


@dataclass(frozen=True)
class HostSteps:
    host: str
    steps: tuple[Step, ...]


Phase = tuple[HostSteps, ...]


def _phase_json(phase: Phase) -> list[dict[str, Any]]:
    return [{"host": h.host, "steps": [s.to_json() for s in h.steps]} for h in phase]


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

    @property
    def previous(self) -> str | None:
        return self.current[0][1] if self.current else None

    def to_json(self) -> dict[str, Any]:
        phases = {"prepare": self.prepare, "preview": self.preview, "switch": self.switch,
                  "refresh": self.refresh, "after_switch": self.after_switch,
                  "finish": self.finish, "undo": self.undo, "discard": self.discard}
        return {
            "environment": self.environment, "release": self.release,
            "hosts": [{"host": h, "current": c,
                       **{k: [s.to_json() for s in _steps(p, h)] for k, p in phases.items()}}
                      for h, c in self.current],
            "preview_checks": [_check_text(c) for c in self.preview_checks],
            "checks": [_check_text(c) for c in self.checks], "notes": list(self.notes)}

    def render(self) -> str:
        out = [f"deploy {self.release} to {self.environment}:"]
        out += [f"  {h}: live {c or '(none)'}" for h, c in self.current]
        out += _phase_lines("prepare", self.prepare)
        out += _phase_lines("preview", self.preview)
        out += [f"  preview check: {_check_text(c)}" for c in self.preview_checks]
        out += _phase_lines("switch", self.switch)
        out += _phase_lines("refresh", self.refresh)
        out += _phase_lines("after switch", self.after_switch)
        out += [f"  check: {_check_text(c)}" for c in self.checks]
        out += _phase_lines("finish", self.finish)
        out += _phase_lines("on failure after a switch", self.undo)
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def _steps(phase: Phase, host: str) -> tuple[Step, ...]:
    return next((h.steps for h in phase if h.host == host), ())


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


def _prepare_steps(obs: Observed, config: EnvironmentConfig, new: Manifest,
                   release: str) -> tuple[Step, ...]:
    steps: list[Step] = [MakeDirs()]
    keep = STAGED_PREFIX + (obs.current or "-")
    stale_staged = tuple(n for n in obs.staged if n != keep)
    if stale_staged:
        steps.append(RemoveStaged(stale_staged))
    stale = unfinished(obs.log, obs.dirs, obs.current)
    present = tuple(r for r in stale if r in obs.dirs)
    if present:
        steps.append(RemoveReleases(present, "unfinished"))
    steps += [Record(r, "removed", "unfinished") for r in stale if r in obs.log.states]
    steps += [Record(release, "preparing"), WriteManifest(release),
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
    victims = _prune_victims(obs, release, keep)
    if victims:
        steps.append(RemoveReleases(victims, "pruned"))
        steps += [Record(r, "removed", "pruned") for r in victims]
    steps.append(StageNextBase(release))
    return tuple(steps)


def _undo(observed: Sequence[Observed]) -> Phase:
    return tuple(HostSteps(o.name, (Switch(o.current), RefreshPhp(o.current)))
                 for o in observed)


def _notes(config: EnvironmentConfig, new: Manifest) -> tuple[str, ...]:
    if config.preview:
        notes = [f"preview route: checks run at {config.preview.url} before the switch; "
                 "after it the live site is checked again, with automatic rollback"]
    else:
        notes = ["no preview route: checks run after the switch, with automatic rollback"]
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
                new: Manifest, release: str) -> DeployPlan:
    """Every step of deploying ``new`` as ``release`` to the observed hosts."""
    pv_checks = preview_checks(config, release)
    preview: Phase = ()
    if config.preview is not None and pv_checks:
        preview = tuple(HostSteps(o.name, (PointLink(config.preview.link, release),))
                        for o in observed)
    hooks = tuple(config.hooks.after_switch)
    return DeployPlan(
        environment=environment, release=release,
        current=tuple((o.name, o.current) for o in observed),
        prepare=tuple(HostSteps(o.name, _prepare_steps(o, config, new, release))
                      for o in observed),
        preview=preview, preview_checks=pv_checks if preview else (),
        preview_on_host=bool(config.preview and config.preview.on_host),
        switch=tuple(HostSteps(o.name, (Switch(release),)) for o in observed),
        refresh=tuple(HostSteps(o.name, (RefreshPhp(release),)) for o in observed),
        after_switch=tuple(HostSteps(o.name, (RunHooks("after_switch", release, o.current,
                                                       hooks),) if hooks else ())
                           for o in observed),
        checks=checks_for(config, release),
        finish=tuple(HostSteps(o.name, _finish_steps(o, release, config.keep_releases))
                     for o in observed),
        undo=_undo(observed),
        discard=tuple(HostSteps(o.name, (Record(release, "bad", "failed before switch"),
                                         RemoveReleases((release,), "failed"),
                                         Record(release, "removed", "failed before switch")))
                      for o in observed),
        rejected=_mark_bad(observed, release, "failed on the preview route"),
        rolled_back=_mark_bad(observed, release, "rolled back"),
        notes=_notes(config, new),
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

    @property
    def previous(self) -> str | None:
        return self.current[0][1] if self.current else None

    @property
    def already_live(self) -> bool:
        return all(c == self.target for _, c in self.current)

    def to_json(self) -> dict[str, Any]:
        phases = {"probe": self.probe, "switch": self.switch, "refresh": self.refresh,
                  "finish": self.finish, "undo": self.undo}
        return {"environment": self.environment, "target": self.target,
                "hosts": [{"host": h, "current": c,
                           **{k: [s.to_json() for s in _steps(p, h)] for k, p in phases.items()}}
                          for h, c in self.current],
                "checks": [f"{c.url} -> {c.status}" for c in self.checks]}

    def render(self) -> str:
        out = [f"roll back {self.environment} to {self.target}:"]
        out += [f"  {h}: {c or '(none)'} -> {self.target}" for h, c in self.current]
        if self.already_live:
            out.append(f"  nothing to do: {self.target} is live on every host")
        for name, phase in (("probe", self.probe), ("switch", self.switch),
                            ("refresh", self.refresh)):
            out += _phase_lines(name, phase)
        out += [f"  check: {c.url} -> {c.status}" for c in self.checks]
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


def _record_rollback(obs: Observed, target: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    if obs.current and obs.current != target:
        steps.append(Record(obs.current, "bad", f"rolled back to {target}"))
    steps.append(Record(target, "live", "rollback"))
    return tuple(steps)


def plan_rollback(environment: str, config: EnvironmentConfig, observed: Sequence[Observed],
                  to: str | None) -> RollbackPlan:
    target = rollback_target(observed, to)
    current = tuple((o.name, o.current) for o in observed)
    if all(o.current == target for o in observed):
        return RollbackPlan(environment, target, current, (), (), (),
                            checks_for(config, target), (), ())
    return RollbackPlan(
        environment, target, current,
        probe=tuple(HostSteps(o.name, (ProbePhp(target),)) for o in observed),
        switch=tuple(HostSteps(o.name, (Switch(target),)) for o in observed),
        refresh=tuple(HostSteps(o.name, (RefreshPhp(target),)) for o in observed),
        checks=checks_for(config, target),
        finish=tuple(HostSteps(o.name, _record_rollback(o, target)) for o in observed),
        undo=_undo(observed),
    )

