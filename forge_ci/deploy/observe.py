"""Observe a target: what it serves, which releases it holds, what its log says.

Only reads, in one round trip. The facts (:class:`Observed`) are plain data that
:mod:`forge_ci.deploy.plan` plans from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forge_ci.build.manifest import Manifest
from forge_ci.deploy.releases import Layout, ReleaseLog
from forge_ci.deploy.ship import STAGED_PREFIX
from forge_ci.errors import ArtifactError, ConnectError, RemoteCommandError
from forge_ci.remote.base import Host, sh

REQUIRED_TOOLS = ("tar", "cp", "flock", "xargs", "mv", "ln", "readlink", "cat")


@dataclass(frozen=True)
class Observed:
    """What a target looks like now: facts only, no connection."""

    name: str
    current: str | None = None
    log: ReleaseLog = field(default_factory=ReleaseLog)
    dirs: tuple[str, ...] = ()  # release directories
    staged: tuple[str, ...] = ()  # staged base copies (.forge-base-*) in releases/
    current_manifest: Manifest | None = None
    # Maintenance files a run wrote and did not live to remove (.forge/maintenance).
    maintenance: tuple[str, ...] = ()


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
cat .forge/maintenance 2>/dev/null; printf '\\0'
"""


def observe(host: Host, layout: Layout) -> Observed:
    fields = host.run(_observe_script(layout)).stdout.split(b"\0")
    if fields[0] != b"present":
        return Observed(host.name)
    missing, notlink, link, listing, log, manifest, maintenance = (fields + [b""] * 8)[1:8]
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
                    tuple(n for n in names if n.startswith(STAGED_PREFIX)), parsed,
                    tuple(maintenance.decode(errors="replace").split()))
