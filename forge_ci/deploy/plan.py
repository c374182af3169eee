"""Observe each target, then plan a deploy or rollback as plain data.

Nothing here changes a target: :func:`observe` only reads, and the plans are
what ``--dry-run`` prints and what the engine then carries out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forge_ci.build.manifest import Manifest, diff
from forge_ci.deploy.releases import Layout, ReleaseLog, event, prune_plan, unfinished
from forge_ci.errors import ArtifactError, ConnectError, RemoteCommandError
from forge_ci.remote.base import Host, sh

REQUIRED_TOOLS = ("tar", "cp", "flock", "xargs", "mv", "ln", "readlink", "cat")


@dataclass
class Observed:
    """What a target looks like now."""

    host: Host
    layout: Layout
    current: str | None
    log: ReleaseLog
    dirs: list[str]
    current_manifest: Manifest | None = None

    @property
    def name(self) -> str:
        return self.host.name


def _observe_script(layout: Layout) -> str:
    # One round trip: NUL-separated fields (the log and manifests never contain NUL).
    tools = " ".join(REQUIRED_TOOLS)
    return f"""\
cd {sh(layout.root)} 2>/dev/null || {{ printf 'absent\\0'; exit 0; }}
printf 'present\\0'
for t in {tools}; do command -v $t >/dev/null || printf '%s ' $t; done; printf '\\0'
if [ -e current ] && [ ! -L current ]; then printf notlink; fi; printf '\\0'
cur=$(readlink current 2>/dev/null); printf '%s\\0' "$cur"
ls -1 releases 2>/dev/null; printf '\\0'
cat .forge/log.jsonl 2>/dev/null; printf '\\0'
[ -n "$cur" ] && cat ".forge/manifests/${{cur##*/}}.json" 2>/dev/null; printf '\\0'
"""


def observe(host: Host, layout: Layout) -> Observed:
    fields = host.run(_observe_script(layout)).stdout.split(b"\0")
    if fields[0] != b"present":
        return Observed(host, layout, None, ReleaseLog(), [])
    missing, notlink, link, dirs, log, manifest = (fields + [b""] * 7)[1:7]
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
    return Observed(host, layout, current, ReleaseLog.parse(log),
                    sorted(dirs.decode().splitlines()), parsed)


@dataclass(frozen=True)
class HostPlan:
    host: str
    current: str | None
    remove_unfinished: tuple[str, ...]
    send: int
    link: int
    remove: int
    prune_after: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "current": self.current,
                "remove_unfinished": list(self.remove_unfinished), "send": self.send,
                "link": self.link, "remove": self.remove, "prune_after": list(self.prune_after)}


@dataclass(frozen=True)
class DeployPlan:
    environment: str
    release: str
    hosts: tuple[HostPlan, ...]
    checks: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"environment": self.environment, "release": self.release,
                "hosts": [h.to_json() for h in self.hosts], "checks": list(self.checks),
                "notes": list(self.notes)}

    def render(self) -> str:
        out = [f"deploy {self.release} to {self.environment}:"]
        for h in self.hosts:
            out.append(f"  {h.host}: live {h.current or '(none)'}; send {h.send} entries, "
                       f"hard-link {h.link}, unlink {h.remove}")
            if h.remove_unfinished:
                out.append(f"    first remove unfinished: {', '.join(h.remove_unfinished)}")
            if h.prune_after:
                out.append(f"    after success prune: {', '.join(h.prune_after)}")
        out.append("  then: shared links, .env, before_switch hooks, switch all hosts, "
                   "PHP refresh, after_switch hooks, health checks")
        out += [f"  check: {c}" for c in self.checks]
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def plan_host(obs: Observed, new: Manifest, release: str, keep: int) -> HostPlan:
    base = obs.current_manifest if obs.current else None
    d = diff(base, new)
    # Pruning is decided as if the new release went live.
    log = ReleaseLog(list(obs.log.events))
    log.events += [event(release, "live")]
    prune = prune_plan(log, [*obs.dirs, release], release, keep)
    return HostPlan(
        host=obs.name,
        current=obs.current,
        remove_unfinished=tuple(unfinished(obs.log, obs.dirs, obs.current)),
        send=len(d.send),
        link=len(new.entries) - len(d.send),
        remove=len(d.remove),
        prune_after=tuple(prune),
    )


@dataclass(frozen=True)
class RollbackPlan:
    environment: str
    target: str
    hosts: tuple[tuple[str, str | None], ...]  # (host, current)
    checks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"environment": self.environment, "target": self.target,
                "hosts": [{"host": h, "current": c} for h, c in self.hosts],
                "checks": list(self.checks)}

    def render(self) -> str:
        out = [f"roll back {self.environment} to {self.target}:"]
        out += [f"  {h}: {c or '(none)'} -> {self.target}" for h, c in self.hosts]
        out += [f"  check: {c}" for c in self.checks]
        return "\n".join(out)
