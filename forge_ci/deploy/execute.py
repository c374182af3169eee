"""Carry out a deploy or rollback plan (:mod:`forge_ci.deploy.plan`) across every host.

The plan says what runs; this module runs its steps in its phases and decides
only what to do when one fails. Prepare every host, then switch the hosts batch
by batch (one batch of all of them unless ``strategy: rolling``), checking each
host of a batch on its own web server before the next; if anything fails after
the first switch, every switched host goes back and the rest are never switched.
Errors
raised here say what state the site is in: :class:`DeployFailed` (nothing
switched), :class:`RolledBack` (switched, then restored), :class:`RollbackFailed`
(could not restore).
"""

from __future__ import annotations

import contextlib
import itertools
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from forge_ci.build.builder import Artifact
from forge_ci.build.manifest import Manifest
from forge_ci.config.models import EnvironmentConfig, HealthCheck
from forge_ci.deploy import dotenv, health, php_refresh
from forge_ci.deploy.lock import Lock
from forge_ci.deploy.observe import Observed, observe, observe_script, parse_observed
from forge_ci.deploy.plan import (
    DeployPlan,
    RollbackPlan,
    check_hosts,
    host_checks,
    plan_deploy,
    plan_rollback,
    public_rounds,
    release_id,
    shared_paths,
)
from forge_ci.deploy.releases import TRASH_PREFIX, Info, Layout, event
from forge_ci.deploy.ship import EarlyStream, ship, stage_script
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
from forge_ci.errors import (
    DeployFailed,
    ForgeError,
    RemoteCommandError,
    RollbackFailed,
    RolledBack,
)
from forge_ci.progress import MakeProgress, silent
from forge_ci.remote.base import (
    Host,
    Part,
    append_text_script,
    batch,
    failed_part,
    point_link_script,
    sh,
    write_atomic_script,
)

Log = Callable[[str], None]


class DatabaseSnapshots(Protocol):
    """The backup store seen from a deploy (:mod:`forge_ci.deploy.safety`)."""

    def take(self, host: Host, release: str) -> str:
        """Snapshot the database from ``host``; the new snapshot's id. Raises
        :class:`ForgeError` when no trusted snapshot could be stored."""
        ...

    def restore(self, host: Host, snapshot: str) -> None:
        """Import ``snapshot``'s database over the live one, from ``host``, after the
        whole dump has authenticated. The caller holds the deploy lock."""
        ...


@dataclass(frozen=True)
class HookPolicy:
    """How long a hook may run, and how much of its output the log keeps."""

    timeout: float = 900.0
    output_lines: int = 30


@dataclass
class Deployment:
    """Everything one deploy or rollback needs, built by the CLI and handed down."""

    environment: str
    config: EnvironmentConfig
    hosts: Sequence[Host]
    root: str
    owner: Mapping[str, str]
    log: Log
    policy: health.HealthPolicy = field(default_factory=health.HealthPolicy)
    hook_policy: HookPolicy = field(default_factory=HookPolicy)
    by: str = ""
    warn: Log | None = None  # a problem that does not fail the run (default: log)
    # Shows text forge did not write (hook output) as text: gha.Runner.untrusted.
    untrusted: Callable[[Sequence[str]], None] | None = None
    progress: MakeProgress = silent  # shows how far shipping has got: gha.Runner.progress
    origin: Info = ()  # commit, subject, run: logged with a new release
    adopt: bool = False  # deploy --adopt: move an existing site's shared paths
    started: float = field(default_factory=time.monotonic)  # for the logged duration
    snapshots: DatabaseSnapshots | None = None  # the backup store, when there is one

    @property
    def layout(self) -> Layout:
        return Layout(self.root)


@dataclass(frozen=True)
class DeployResult:
    release: str
    previous: str | None
    url: str | None
    plan: DeployPlan | RollbackPlan
    health: str = ""
    # From the end of the switch until every check passed (the marker comes first).
    switch_to_healthy: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)  # as in the release log
    snapshot: str | None = None  # the database snapshot taken before the switch


# -- one step ----------------------------------------------------------------

@dataclass
class _Run:
    """One deploy's state while its steps run: the hosts by name, the artifact."""

    dep: Deployment
    hosts: Mapping[str, Host]
    artifact: Artifact | None = None
    # Phase durations in seconds (``<phase>_s``), recorded with the "live" event.
    metrics: dict[str, float] = field(default_factory=dict)
    snapshot: str = ""  # taken before the switch; recorded with the "live" event
    observed: Mapping[str, Observed] = field(default_factory=dict)  # by host name
    # A host's last prepare steps, held back to run in its switch's round trip.
    held: dict[str, list[Part]] = field(default_factory=dict)
    early: Mapping[str, EarlyStream] = field(default_factory=dict)  # by host name

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.metrics[f"{name}_s"] = round(time.monotonic() - started, 3)


def _dotenv_values(config: EnvironmentConfig) -> dict[str, str]:
    return {key: secret.get_secret_value() for key, secret in config.dotenv.items()}


def _link_shared_script(lay: Layout, release: str, paths: Sequence[str]) -> str:
    # Every command ends the script when it fails: ``set -e`` would not, inside a
    # batch, where the script runs as the left side of ``||``.
    script = []
    for p in paths:
        s = posixpath.join(lay.shared, p)
        r = posixpath.join(lay.release(release), p)
        rel = posixpath.relpath(s, posixpath.dirname(r))
        script.append(
            f'if [ ! -e {sh(s)} ]; then mkdir -p {sh(posixpath.dirname(s))} || exit 1; '
            f'if [ -e {sh(r)} ] && [ ! -L {sh(r)} ]; then cp -a {sh(r)} {sh(s)} || exit 1; '
            f'else mkdir -p {sh(s)} || exit 1; fi; fi'
        )
        # Shipping removed r from the release already: rm and mkdir (commands, where
        # tests are builtins) only when it is there or its directory is not.
        d = sh(posixpath.dirname(r))
        script.append(f"if [ -e {sh(r)} ] || [ -L {sh(r)} ]; then rm -rf {sh(r)} || exit 1; fi; "
                      f"[ -d {d} ] || mkdir -p {d} || exit 1; ln -s {sh(rel)} {sh(r)} || exit 1")
    return "\n".join(script) or "true"


def _remove_releases_script(lay: Layout, step: RemoveReleases) -> str:
    """Delete the releases and their manifests; ``step.later``: rename each release
    out of releases/ now and delete it and its manifest in the background (with
    anything an earlier, killed deletion left; a manifest left behind is never read:
    only the live release's is)."""
    manifests = [lay.manifest(r) for r in step.releases]
    if not step.later:
        return sh("rm", "-rf", "--", *(lay.release(r) for r in step.releases), *manifests)
    moves = "".join(
        f"if [ -e {sh(lay.release(r))} ]; then mv -T -- {sh(lay.release(r))} "
        f"{sh(lay.trash(r))} || exit 1; fi\n" for r in step.releases)
    # Alone in the background, every stream redirected: the command (and the round
    # trip) ends without waiting for it.
    return (f"{moves}nohup rm -rf -- {sh(lay.releases)}/{TRASH_PREFIX}* {sh(*manifests)} "
            "</dev/null >/dev/null 2>&1 &\n")


def _hook_env(dep: Deployment, step: RunHooks) -> str:
    pairs = {"FORGE_ENVIRONMENT": dep.environment, "FORGE_RELEASE": step.release,
             "FORGE_RELEASE_PATH": dep.layout.release(step.release),
             "FORGE_PREVIOUS_RELEASE": step.previous or "", "FORGE_PATH": dep.root}
    return "".join(f"export {k}={sh(v)}\n" for k, v in pairs.items())


def _hooks(dep: Deployment, host: Host, step: RunHooks) -> None:
    for i, command in enumerate(step.commands):
        dep.log(f"{host.name}: {step.phase}[{i}]: {command}")
        r = host.run(_hook_env(dep, step)
                     + f"cd {sh(dep.layout.release(step.release))} || exit 1\n{command}\n",
                     check=False, timeout=dep.hook_policy.timeout)
        output = (r.stdout + r.stderr).decode(errors="replace").splitlines()
        _show_untrusted(dep, output[-dep.hook_policy.output_lines:])
        if r.status != 0:
            raise DeployFailed(f"{host.name}: hook {step.phase}[{i}] failed with exit {r.status}",
                               hint="fix the hook or the release; the output is above")


def _show_untrusted(dep: Deployment, lines: Sequence[str]) -> None:
    if dep.untrusted is not None:
        dep.untrusted(lines)
    else:
        for line in lines:
            dep.log(f"    {line}")


def _ship(run: _Run, host: Host, step: Ship, before: Sequence[Part] = ()) -> None:
    """Ship ``step``; ``before``: plain steps to run first (see :func:`ship`)."""
    dep, lay = run.dep, run.dep.layout
    assert run.artifact is not None
    dep.log(f"{host.name}: shipping {step.release}")
    generated: dict[str, tuple[bytes, int]] = {}
    if ".env" in step.generated:
        generated[".env"] = (dotenv.render(_dotenv_values(dep.config)), 0o600)
    if health.MARKER_PATH in step.generated:
        generated[health.MARKER_PATH] = (health.marker_php(step.release), 0o644)
    stats = ship(host, run.artifact, lay.release(step.release),
                 lay.release(step.base) if step.base else None, step.send, step.remove,
                 dep.log, generated=generated, progress=dep.progress,
                 early=run.early.get(host.name), before=before)
    for name, value in (("sent_entries", stats.sent_entries), ("sent_bytes", stats.sent_bytes),
                        ("linked_entries", stats.linked_entries)):
        run.metrics[name] = run.metrics.get(name, 0) + value


def _refresh(dep: Deployment, host: Host, release: str | None) -> None:
    """Make PHP run ``release``, which ``current`` now points at (None: nothing)."""
    started = time.monotonic()
    where = dep.layout.release(release) if release else None
    done = php_refresh.refresh(host, dep.config.php, where)
    if done:
        dep.log(f"{host.name}: PHP: {done} ({time.monotonic() - started:.2f}s)")


def _probe(dep: Deployment, host: Host, release: str) -> None:
    answer = php_refresh.probe(host, dep.config.php, dep.layout.release(release))
    if answer is not None and answer.state == "off":
        dep.log(f"{host.name}: PHP: opcache is off in the pool at {dep.config.php.fpm_socket}; "
                "nothing will need a reset")


def _switch(dep: Deployment, host: Host, release: str | None) -> None:
    lay = dep.layout
    if release is None:
        # A first deploy undone: there is no earlier release to go back to.
        with contextlib.suppress(ForgeError):
            host.rename(lay.current, posixpath.join(lay.meta, "failed-current"))
        return
    dep.log(f"{host.name}: switching current to {release}")
    host.point_link(lay.current, posixpath.join("releases", release))


def _event_lines(dep: Deployment, steps: Sequence[Record],
                 metrics: Mapping[str, float] | None = None, snapshot: str = "") -> bytes:
    """The steps' events as log lines; ``metrics``, ``snapshot`` and how long the run
    took to get there go with a "live" event only."""
    took = (("seconds", f"{time.monotonic() - dep.started:.1f}"),)
    return b"".join(event(s.release, s.state, dep.by, s.note,
                          metrics if s.state == "live" else None,
                          s.info + took if s.state == "live" else s.info,
                          snapshot if s.state == "live" else "").to_line()
                    for s in steps)


def _record(dep: Deployment, host: Host, steps: Sequence[Record],
            metrics: Mapping[str, float] | None = None, snapshot: str = "") -> None:
    """Append the steps' events (see :func:`_event_lines`)."""
    host.append(dep.layout.log, _event_lines(dep, steps, metrics, snapshot))


def _adopt_script(lay: Layout, paths: Sequence[str]) -> str:
    script = ["set -e"]
    for p in paths:
        here, there = posixpath.join(lay.root, p), posixpath.join(lay.shared, p)
        rel = posixpath.relpath(there, posixpath.dirname(here))
        script.append(f"mkdir -p {sh(posixpath.dirname(there))}; mv -T -- {sh(here)} {sh(there)}; "
                      f"ln -s -- {sh(rel)} {sh(here)}")
    return "\n".join(script)


def _maintenance_on(dep: Deployment, host: Host, release: str) -> None:
    """Record the release in .forge/maintenance, then write the file: a run killed
    in between leaves a record the next run acts on, never an unrecorded file."""
    lay = dep.layout
    path = posixpath.join(lay.release(release), MAINTENANCE_FILE)
    tmp = path + ".forge-tmp"
    r = host.run(f"set -e\nmkdir -p {sh(lay.meta)}\n"
                 f"printf '%s\\n' {sh(release)} >> {sh(lay.maintenance)}\n"
                 f"[ -d {sh(posixpath.dirname(path))} ] || {{ echo no-wordpress; exit 0; }}\n"
                 f"printf '%s\\n' '<?php $upgrading = time();' > {sh(tmp)}\n"
                 f"mv -f {sh(tmp)} {sh(path)}\n", check=False)
    host.check(r, "writing the maintenance file")
    if b"no-wordpress" in r.stdout:
        dep.log(f"{host.name}: {release} has no {posixpath.dirname(MAINTENANCE_FILE)}/: "
                "no maintenance file written")
    else:
        dep.log(f"{host.name}: maintenance file up in {release}")


def _maintenance_off(dep: Deployment, host: Host, why: str) -> None:
    """Remove the maintenance file of every release recorded, then the record."""
    lay = dep.layout
    r = host.run(
        f"rec={sh(lay.maintenance)}\n[ -f \"$rec\" ] || exit 0\n"
        "while IFS= read -r r; do\n"
        "  case \"$r\" in ''|*/*|.|..) continue;; esac\n"
        f"  rm -f {sh(lay.releases)}/\"$r\"/{sh(MAINTENANCE_FILE)} && echo removed\n"
        "done < \"$rec\"\nrm -f \"$rec\"\n", check=False)
    host.check(r, "removing the maintenance file")
    if r.stdout:
        dep.log(f"{host.name}: maintenance file removed" + (f" ({why})" if why else ""))


def _do(run: _Run, host: Host, step: Step) -> None:
    dep, lay = run.dep, run.dep.layout
    if isinstance(step, MakeDirs):
        host.makedirs(lay.releases, lay.shared, posixpath.dirname(lay.manifest("-")))
    elif isinstance(step, RemoveStaged):
        host.remove_trees(posixpath.join(lay.releases, n) for n in step.names)
    elif isinstance(step, RemoveReleases):
        dep.log(f"{host.name}: removing {step.why} releases {', '.join(step.releases)}")
        host.check(host.run(_remove_releases_script(lay, step), check=False),
                   f"removing {', '.join(step.releases)}")
    elif isinstance(step, Record):
        _record(dep, host, [step], run.metrics, run.snapshot)
    elif isinstance(step, Adopt):
        dep.log(f"{host.name}: {step.describe()}")
        host.check(host.run(_adopt_script(lay, step.paths), check=False),
                   "moving the existing site's shared paths into shared/")
    elif isinstance(step, WriteManifest):
        assert run.artifact is not None
        host.write_atomic(lay.manifest(step.release), run.artifact.manifest.to_bytes())
    elif isinstance(step, Ship):
        _ship(run, host, step)
    elif isinstance(step, ProbePhp):
        _probe(dep, host, step.release)
    elif isinstance(step, LinkShared):
        dep.log(f"{host.name}: linking shared paths")
        host.check(host.run(_link_shared_script(lay, step.release, step.paths), check=False),
                   "linking shared paths")
    elif isinstance(step, RunHooks):
        _hooks(dep, host, step)
    elif isinstance(step, PointLink):
        host.point_link(lay.link(step.link), posixpath.join("releases", step.release))
    elif isinstance(step, Switch):
        _switch(dep, host, step.release)
    elif isinstance(step, RefreshPhp):
        _refresh(dep, host, step.release)
    elif isinstance(step, TakeSnapshot):
        run.snapshot = _snapshots(dep).take(host, step.release)
        dep.log(f"{host.name}: database snapshot {run.snapshot} stored")
    elif isinstance(step, MaintenanceOn):
        _maintenance_on(dep, host, step.release)
    elif isinstance(step, MaintenanceOff):
        _maintenance_off(dep, host, step.why)
    elif isinstance(step, RestoreDatabase):
        dep.log(f"{host.name}: restoring the database from snapshot {step.snapshot}")
        _snapshots(dep).restore(host, step.snapshot)
    elif isinstance(step, StageNextBase):
        host.check(host.run(stage_script(lay.release(step.release)), check=False),
                   "staging the next base")
    else:  # pragma: no cover - a new step type without an executor is a bug
        raise AssertionError(f"no executor for {step!r}")


def _snapshots(dep: Deployment) -> DatabaseSnapshots:
    if dep.snapshots is None:
        raise DeployFailed(f"{dep.environment} has no backup store to snapshot to",
                           hint="add a backup: section with a store and a database")
    return dep.snapshots


def _part(run: _Run, host: Host, steps: Sequence[Step]) -> Part | None:
    """``steps`` (one step, or consecutive log events appended together) as one part
    of a batch, its log line said now; None for the steps that stream, run hooks or
    talk to PHP: those run alone."""
    dep, lay, step = run.dep, run.dep.layout, steps[0]
    if isinstance(step, Record):
        lines = _event_lines(dep, [s for s in steps if isinstance(s, Record)], run.metrics,
                             run.snapshot)
        return Part(append_text_script(lay.log, lines.decode()), f"appending to {lay.log}")
    if isinstance(step, MakeDirs):
        paths = [lay.releases, lay.shared, posixpath.dirname(lay.manifest("-"))]
        there = " && ".join(f"[ -d {sh(p)} ]" for p in paths)
        return Part(f"{there} || " + sh("mkdir", "-p", "--", *paths),
                    f"creating {', '.join(paths)}")
    if isinstance(step, RemoveStaged):
        paths = [posixpath.join(lay.releases, n) for n in step.names]
        return Part(sh("rm", "-rf", "--", *paths), f"removing {', '.join(paths)}")
    if isinstance(step, RemoveReleases):
        dep.log(f"{host.name}: removing {step.why} releases {', '.join(step.releases)}")
        paths = [*(lay.release(r) for r in step.releases),
                 *(lay.manifest(r) for r in step.releases)]
        return Part(_remove_releases_script(lay, step), f"removing {', '.join(paths)}")
    if isinstance(step, WriteManifest):
        assert run.artifact is not None
        return _write_manifest(lay, step.release, run.artifact.manifest.to_bytes(),
                               run.observed.get(host.name))
    if isinstance(step, LinkShared):
        dep.log(f"{host.name}: linking shared paths")
        return Part(_link_shared_script(lay, step.release, step.paths), "linking shared paths")
    if isinstance(step, PointLink | Switch) and step.release is not None:
        if isinstance(step, Switch):
            dep.log(f"{host.name}: switching current to {step.release}")
        link = lay.link(step.link) if isinstance(step, PointLink) else lay.current
        target = posixpath.join("releases", step.release)
        return Part(point_link_script(link, target), f"pointing {link} at {target}")
    if isinstance(step, StageNextBase):
        return Part(stage_script(lay.release(step.release)), "staging the next base")
    return None


def _write_manifest(lay: Layout, release: str, data: bytes, obs: Observed | None) -> Part:
    """Store ``data`` as ``release``'s manifest. Where the live release's stored
    manifest was read, only what differs from it travels: its head and tail are
    copied on the target (a one-file change sends a few hundred bytes, not the
    whole manifest). Not synced (an fsync costs 5-20 ms, more while the disk is
    busy): after a crash a short or wrong manifest fails the digest check the next
    run makes (:mod:`forge_ci.deploy.observe`), which costs a full send."""
    path = lay.manifest(release)
    live = obs.current_manifest_bytes if obs is not None and obs.current else b""
    head = _common_length(live, data)
    tail = _common_length(live[head:][::-1], data[head:][::-1])
    if not live or head + tail < len(data) // 2:
        return Part(write_atomic_script(path, durable=False), f"writing {path}", data)
    assert obs is not None and obs.current is not None
    base, tmp = sh(lay.manifest(obs.current)), sh(f"{path}.forge-tmp")
    middle = data[head:len(data) - tail]
    # A small middle goes in the script (printf is a builtin, cat a command); the
    # manifest is ASCII JSON (json.dumps escapes the rest), so it quotes as text.
    inline = len(middle) <= _INLINE
    put = f"printf %s {sh(middle.decode('ascii'))}" if inline else "cat"
    # No secret here: made readable as it is written, no chmod.
    script = (f"umask 022; if {{ head -c {head} {base} && {put} && tail -c {tail} {base}; }} "
              f"> {tmp}; then mv -f -- {tmp} {sh(path)}; else rm -f -- {tmp}; exit 1; fi")
    return Part(script, f"writing {path}", None if inline else middle)


_INLINE = 16384  # bytes of a manifest edit carried in the script itself


def _common_length(a: bytes, b: bytes, block: int = 4096) -> int:
    """How many bytes ``a`` and ``b`` have in common from the start."""
    n, i = min(len(a), len(b)), 0
    while i < n and a[i:i + block] == b[i:i + block]:
        i += block
    while i < n and a[i] == b[i]:
        i += 1
    return min(i, n)


def _groups(steps: Sequence[Step]) -> Iterator[tuple[Step, ...]]:
    """Each step alone, except consecutive log events: together."""
    for is_record, group in itertools.groupby(steps, lambda s: isinstance(s, Record)):
        if is_record:
            yield tuple(group)
        else:
            yield from ((s,) for s in group)


class _HeldFailed(Exception):
    """A prepare step held back for the switch's round trip failed: it ran before the
    switch in that round trip, so nothing was switched (see :func:`_can_hold`)."""

    def __init__(self, cause: ForgeError) -> None:
        super().__init__(cause.message)
        self.cause = cause


def _host_steps(run: _Run, hs: HostSteps, hold: bool = False) -> None:
    """Run one host's steps in order, consecutive plain file steps in one round trip
    (:func:`forge_ci.remote.base.batch`: same order, stopping at the first failure,
    so a removal still comes after the event that announces it). ``hold``: keep the
    last such steps for the host's next steps' first round trip; the steps held
    before run first (a failure among them raises :class:`_HeldFailed`)."""
    host = run.hosts[hs.host]
    held = run.held.pop(hs.host, [])
    parts: list[Part] = list(held)

    def flush() -> None:
        nonlocal held, parts
        try:
            batch(host, parts)
        except RemoteCommandError as e:
            index = failed_part(e, parts)
            if index is not None and index < len(held):
                raise _HeldFailed(e) from None
            raise
        held, parts = [], []

    for group in _groups(hs.steps):
        part = _part(run, host, group)
        if part is None and isinstance(group[0], Ship) and not held:
            # The plain steps before it go in the shipping's own round trip.
            _ship(run, host, group[0], before=parts)
            parts = []
            continue
        if part is None:
            flush()
            _do(run, host, group[0])
            continue
        if part.input is not None and any(p.input is not None for p in parts):
            flush()
        parts.append(part)
    if hold:
        run.held[hs.host] = parts
    else:
        flush()


def _phase(run: _Run, phase: Phase) -> None:
    for hs in phase:
        _host_steps(run, hs)


def _best_effort(run: _Run, phase: Phase) -> None:
    """Every step of ``phase`` that can run: on a full disk the log cannot grow, but
    the release that filled it must still be removed."""
    for hs in phase:
        host = run.hosts[hs.host]
        for step in hs.steps:
            with contextlib.suppress(ForgeError):
                _do(run, host, step)


# -- deploy ------------------------------------------------------------------

def _observe_all(dep: Deployment, known: Manifest | None = None) -> list[Observed]:
    return [observe(h, dep.layout, shared_paths(dep.config), known) for h in dep.hosts]


def _make_plan(dep: Deployment, artifact: Artifact,
               observed: Sequence[Observed] | None = None) -> DeployPlan:
    observed = _observe_all(dep, artifact.manifest) if observed is None else observed
    release = release_id(artifact.digest, observed)
    return plan_deploy(dep.environment, dep.config, observed, artifact.manifest, release,
                       origin=dep.origin, adopt=dep.adopt)


def deploy(dep: Deployment, artifact: Artifact, *, dry_run: bool = False) -> DeployResult:
    dotenv.check(dep.environment, _dotenv_values(dep.config))  # before any host is touched
    if dry_run:
        plan = _make_plan(dep, artifact)
        return DeployResult(plan.release, plan.previous, dep.config.url, plan)
    with contextlib.ExitStack() as stack:
        # A first deploy's artifact starts streaming now, while the lock is taken.
        early = {h.name: EarlyStream(h, dep.layout.meta, dep.layout.current, artifact,
                                     dep.progress) for h in dep.hosts}
        for stream in early.values():
            stack.callback(stream.discard)
        locking = time.monotonic()
        observed = _lock_all(dep, stack, artifact.manifest)
        plan = _make_plan(dep, artifact, observed)
        run = _Run(dep, {h.name: h for h in dep.hosts}, artifact,
                   observed={o.name: o for o in observed}, early=early)
        run.metrics["lock_and_observe_s"] = round(time.monotonic() - locking, 3)
        dep.log(plan.render())
        with run.timed("prepare"):
            _prepare_all(run, plan)
        if plan.snapshot:
            with run.timed("snapshot"):
                _prepare_all(run, plan, plan.snapshot)
        if plan.migrate:
            with run.timed("migrate"):
                _prepare_all(run, plan, plan.migrate)
        with run.timed("preview"):
            _preview(run, plan)
        with run.timed("switch_and_check"):
            try:
                outcome = _switch_all_and_check(run, plan)
            except _HeldFailed as f:
                _discard(run, plan, f.cause)
        _finish(run, plan.finish, plan.release)
        return DeployResult(plan.release, plan.previous, dep.config.url, plan, outcome.detail,
                            outcome.seconds, dict(run.metrics), run.snapshot or None)
    raise AssertionError("unreachable")


def _lock_all(dep: Deployment, stack: contextlib.ExitStack,
              known: Manifest | None = None) -> list[Observed]:
    """Take every host's lock, held until ``stack`` closes, and observe each host in
    its lock's round trip (under the lock: no other run changes what is seen;
    ``known``: the manifest being deployed). The log says where a run waits, and
    where it was when it died."""
    script = observe_script(dep.layout, shared_paths(dep.config))
    observed = []
    # What reading the live manifests against ``known`` needs (in a thread) and the
    # health checks' imports are made while the first lock's round trip is under
    # way (the first command on a new connection also waits for the server to set
    # up the session): off the critical path, and after the request is sent, so
    # they do not hold it up.
    warm = threading.Thread(target=known.prepare_reading, daemon=True) if known else None
    waiting: list[bool] = []

    def meanwhile() -> None:
        if not waiting:
            waiting.append(True)
            if warm is not None:
                warm.start()
            health.preload()

    for host in dep.hosts:
        dep.log(f"{host.name}: taking the deploy lock")
        lock = stack.enter_context(Lock(host, dep.layout, dep.owner, dep.config.lock_wait,
                                        note=dep.log, after=script, sent=meanwhile))
        dep.log(f"{host.name}: locked")
        if warm is not None:
            warm.join()
        observed.append(parse_observed(host.name, dep.layout, lock.output, known))
    return observed


def _prepare_all(run: _Run, plan: DeployPlan, phase: Phase | None = None) -> None:
    """Run ``phase`` (default: prepare); any failure discards the release. The
    prepare phase's last plain file steps wait for the switch's round trip where
    nothing runs between them (:func:`_can_hold`)."""
    try:
        if phase is None and _can_hold(plan):
            for hs in plan.prepare:
                _host_steps(run, hs, hold=True)
        else:
            _phase(run, plan.prepare if phase is None else phase)
    except ForgeError as e:
        _discard(run, plan, e)


def _discard(run: _Run, plan: DeployPlan, e: ForgeError) -> NoReturn:
    # A release that never went live is marked bad and its space freed
    # (a full disk must not stay full because of the release that filled it).
    _best_effort(run, plan.discard)
    raise DeployFailed(f"{e.message} — the live site was not touched", hint=e.hint) from None


def _can_hold(plan: DeployPlan) -> bool:
    """Whether prepare's last steps may run in the switch's round trip, just before
    the switch: one host (nothing else is switched first, so a failure among them
    still means nothing was switched) and nothing planned between the two."""
    return (len(plan.prepare) == 1 and len(plan.batches) == 1 and not plan.snapshot
            and not plan.migrate and not plan.preview)


def _preview(run: _Run, plan: DeployPlan) -> None:
    """Serve the release on the preview route and check it there: visitors see nothing.
    Once the marker shows the preview serves the release, a failure refuses it at
    once (``live``): nobody is waiting for it to come right."""
    dep = run.dep
    if not plan.preview:
        return
    pv_url = dep.config.preview.url if dep.config.preview else ""
    dep.log(f"preview: checking {plan.release} at {pv_url}")
    checks = plan.preview_checks
    try:
        _phase(run, plan.preview)
        if plan.check_hosts:
            # Every host checks its own preview: one bad host stops them all.
            outcome = _check_each(run, plan.check_hosts, checks, pv_url, live=True)
        elif plan.preview_on_host:
            outcome = _check_each(run, [(h.name, "") for h in dep.hosts], checks, pv_url,
                                  live=True)
        else:
            outcome = health.run_checks(checks, dep.policy, dep.log, live=True, where=pv_url)
    except ForgeError as e:
        outcome = health.Outcome(False, e.message, 0.0)
    if not outcome.ok:
        _best_effort(run, plan.rejected)
        raise DeployFailed(f"the release failed its checks on the preview route "
                           f"({outcome.detail}); visitors never saw it",
                           hint="fix the release and deploy again")
    dep.log(f"preview: {outcome.detail} in {outcome.seconds:.1f}s")


def _check_each(run: _Run, hosts: Sequence[tuple[str, str]], checks: Sequence[HealthCheck],
                url: str, live: bool) -> health.Outcome:
    """Run ``checks`` on each host in turn with curl, connected to the host's own
    web server at its address ("" : as the URL resolves there); the first host
    that fails stops the rest, and its name is in the outcome."""
    dep = run.dep
    total = 0.0
    for name, address in hosts:
        rule = health.connect_rule(url, address) if address else None
        fetch = health.fetch_on(run.hosts[name], dep.policy.request_timeout, rule)
        outcome = health.run_checks(checks, dep.policy, dep.log, fetch=fetch, live=live,
                                    where=name)
        total += outcome.seconds
        if not outcome.ok:
            return outcome
        dep.log(f"health: {name}: {outcome.detail}")
    return health.Outcome(True, f"healthy on each of {len(hosts)} host(s)", total)


class _SwitchFailed(Exception):
    """Raised by :func:`_switch_and_verify` after it put every host back it could."""

    def __init__(self, cause: ForgeError, unrestored: list[str], switched: list[str],
                 untouched: list[str]) -> None:
        super().__init__(cause.message)
        self.cause, self.unrestored = cause, unrestored
        self.switched, self.untouched = switched, untouched


@dataclass(frozen=True)
class _Checking:
    """How a switch is verified: the batches, each host's own checks, the URL's."""

    batches: tuple[tuple[str, ...], ...]
    check_hosts: tuple[tuple[str, str], ...]
    host_checks: tuple[HealthCheck, ...]
    rounds: int


def _checking(dep: Deployment, plan: DeployPlan | RollbackPlan) -> _Checking:
    if isinstance(plan, DeployPlan):
        return _Checking(plan.batches, plan.check_hosts, plan.host_checks, plan.rounds)
    # A rollback switches every host at once, checked as a deploy is.
    names = [h for h, _ in plan.current]
    return _Checking((tuple(names),),
                     check_hosts(dep.config, names), host_checks(dep.config, plan.checks),
                     public_rounds(dep.config))


def _switch_and_verify(run: _Run, plan: DeployPlan | RollbackPlan,
                       after_switch: Phase) -> health.Outcome:
    """Switch the hosts batch by batch (refresh PHP, run hooks, check each host of
    the batch on its own), then check through the site URL; on any failure run
    ``undo`` on every switched host."""
    dep = run.dep
    release = plan.release if isinstance(plan, DeployPlan) else plan.target
    how = _checking(dep, plan)
    address = dict(how.check_hosts)
    switched: list[str] = []
    switched_at: float | None = None
    try:
        for i, batch in enumerate(how.batches, 1):
            if len(how.batches) > 1:
                dep.log(f"batch {i}/{len(how.batches)}: {', '.join(batch)}")
            for hs in plan.switch:
                if hs.host in batch:
                    switched.append(hs.host)
                    _host_steps(run, hs)
            switched_at = switched_at or time.monotonic()
            _phase(run, tuple(h for h in plan.refresh if h.host in batch))
            _phase(run, tuple(h for h in after_switch if h.host in batch))
            on_hosts = [(h, address[h]) for h in batch if h in address]
            if on_hosts and how.host_checks and dep.config.url:
                dep.log(f"health: checking {release} on {', '.join(batch)}")
                outcome = _check_each(run, on_hosts, how.host_checks, dep.config.url, live=True)
                if not outcome.ok:
                    raise DeployFailed(f"health checks failed: {outcome.detail}")
        if not plan.checks:
            return health.Outcome(True, "not checked (no health checks configured)", 0.0)
        dep.log(f"health: checking {release}")
        outcome = health.run_checks(plan.checks, dep.policy, dep.log, live=True,
                                    rounds=how.rounds, where=dep.config.url or "")
        if not outcome.ok:
            raise DeployFailed(f"health checks failed: {outcome.detail}")
        dep.log(f"health: {outcome.detail} in {outcome.seconds:.2f}s")
        # What a visitor waits for: PHP refresh and after_switch hooks included.
        return health.Outcome(True, outcome.detail, time.monotonic() - (switched_at or 0.0))
    except ForgeError as e:
        unrestored = []
        for hs in plan.undo:
            if hs.host not in switched:
                continue
            try:
                _host_steps(run, hs)
            except ForgeError as back:
                dep.log(f"{hs.host}: switching back FAILED: {back}")
                unrestored.append(hs.host)
        untouched = [h for b in how.batches for h in b if h not in switched]
        raise _SwitchFailed(e, unrestored, switched, untouched) from None


def _switch_all_and_check(run: _Run, plan: DeployPlan) -> health.Outcome:
    try:
        return _switch_and_verify(run, plan, plan.after_switch)
    except _SwitchFailed as f:
        _best_effort(run, plan.rolled_back)
        back = plan.previous or "(nothing: first deploy)"
        if f.unrestored:
            raise RollbackFailed(f"{f.cause.message}; switching back to {back} FAILED on "
                                 f"{', '.join(f.unrestored)}",
                                 hint="check the site now: forge-ci releases, then rollback",
                                 ) from None
        where = "every host"
        if f.untouched:
            where = (f"every switched host ({', '.join(f.switched)}); never switched: "
                     f"{', '.join(f.untouched)}")
        raise RolledBack(f"{f.cause.message}; rolled back to {back} on {where}",
                         hint="the release is marked bad; fix it and deploy again") from None


def _finish(run: _Run, phase: Phase, release: str) -> None:
    """Record a release every host serves and that passed its checks (and prune).

    If a host cannot be reached any more, the site is still right; failing now
    would report "nothing changed" (exit 1) for a site that did change, so warn.
    The next run works from what is live; only the log lags (the release shows as
    prepared) and old releases wait for the next prune.
    """
    dep = run.dep
    for hs in phase:
        dep.log(f"{hs.host}: recording {release} as live")
        try:
            _host_steps(run, hs)
        except ForgeError as e:
            (dep.warn or dep.log)(f"{hs.host}: {release} is live and passed its checks, but "
                                  f"recording that failed: {e.message}")


# -- rollback ----------------------------------------------------------------

def rollback(dep: Deployment, to: str | None, *, dry_run: bool = False,
             force: bool = False, with_database: bool = False) -> DeployResult:
    """Switch every host to ``to`` (or the previous good release), health-checked
    unless ``force``; ``with_database`` also restores the database snapshot recorded
    with it, after the switch and before the checks, inside this run's lock."""
    with contextlib.ExitStack() as stack:
        observed = _observe_all(dep) if dry_run else _lock_all(dep, stack)
        plan = plan_rollback(dep.environment, dep.config, observed, to, force=force,
                             with_database=with_database)
        target, previous = plan.target, plan.previous
        if dry_run:
            return DeployResult(target, previous, dep.config.url, plan)
        dep.log(plan.render())
        run = _Run(dep, {h.name: h for h in dep.hosts})
        _phase(run, plan.cleanup)
        if plan.already_live:
            try:
                _phase(run, plan.database)
            except ForgeError as e:
                raise DeployFailed(f"{e.message} — {target} stays live", hint=e.hint) from None
            return DeployResult(target, previous, dep.config.url, plan, "already live")
        try:
            _phase(run, plan.probe)
        except ForgeError as e:
            raise DeployFailed(f"{e.message} — nothing was switched", hint=e.hint) from None
        try:
            with run.timed("switch_and_check"):
                outcome = _switch_and_verify(run, plan, plan.database).detail
            if plan.forced:
                outcome = "not checked (--force)"
        except _SwitchFailed as f:
            if f.unrestored:
                raise RollbackFailed(f"{f.cause.message}; restoring {previous} failed on "
                                     f"{', '.join(f.unrestored)}") from None
            raise DeployFailed(f"release {target}: {f.cause.message}; {previous} stays live",
                               hint="pick another release with --to") from None
        _finish(run, plan.finish, target)
        return DeployResult(target, previous, dep.config.url, plan, outcome,
                            metrics=dict(run.metrics))
    raise AssertionError("unreachable")
