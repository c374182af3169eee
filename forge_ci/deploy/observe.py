"""Observe a target: what it serves, which releases it holds, what its log says.

Only reads, in one round trip. The facts (:class:`Observed`) are plain data that
:mod:`forge_ci.deploy.plan` plans from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from forge_ci.build.manifest import Manifest
from forge_ci.deploy.releases import Layout, ReleaseLog
from forge_ci.deploy.ship import STAGED_PREFIX
from forge_ci.errors import ArtifactError, ConnectError, RemoteCommandError
from forge_ci.remote.base import Host, sh

# flock is optional: without it the deploy lock is a mkdir lock (forge_ci/deploy/lock.py).
REQUIRED_TOOLS = ("tar", "cp", "xargs", "mv", "ln", "readlink", "cat", "head", "tail")
# Where a site forge did not deploy keeps its media (Bedrock's layout).
SITE_UPLOADS = "web/app/uploads"


@dataclass(frozen=True)
class Observed:
    """What a target looks like now: facts only, no connection."""

    name: str
    current: str | None = None
    log: ReleaseLog = field(default_factory=ReleaseLog)
    dirs: tuple[str, ...] = ()  # release directories
    staged: tuple[str, ...] = ()  # staged base copies (.forge-base-*) in releases/
    current_manifest: Manifest | None = None
    shared: tuple[str, ...] = ()  # the asked-for shared paths that exist in shared/
    # A site forge did not deploy (no releases/): which of the asked-for paths (and
    # web/app/uploads) it holds in place, as real files or directories.
    site_paths: tuple[str, ...] = ()
    # Maintenance files a run wrote and did not live to remove (.forge/maintenance).
    maintenance: tuple[str, ...] = ()
    # current_manifest as stored (the next one is written as an edit of it).
    current_manifest_bytes: bytes = field(default=b"", repr=False)


def observe_script(layout: Layout, shared: Sequence[str] = ()) -> str:
    """The remote side of :func:`observe`; its output is what :func:`parse_observed` reads
    (run it alone, or after a lock in the lock's round trip)."""
    # One round trip: NUL-separated fields (the log and manifests never contain NUL;
    # shared paths are clean relative paths, without newlines). Shell builtins where
    # they do (each other command is a fork and an exec on the target): cat only for
    # files that exist, and tar's version only while no release is live (a live
    # release was unpacked by the GNU tar checked then).
    tools = " ".join(REQUIRED_TOOLS)
    wanted = " ".join(sh(p) for p in shared)
    site = " ".join(sh(p) for p in dict.fromkeys([*shared, SITE_UPLOADS]))
    return f"""\
if cd {sh(layout.root)} 2>/dev/null; then
printf 'present\\0'
for t in {tools}; do command -v $t >/dev/null || printf '%s ' $t; done
if [ ! -L current ] && command -v tar >/dev/null; then
  case "$(tar --version 2>/dev/null)" in *"GNU tar"*) ;; *) printf 'GNU-tar ' ;; esac
fi; printf '\\0'
if [ -e current ] && [ ! -L current ]; then printf notlink; fi; printf '\\0'
cur=; [ -L current ] && cur=$(readlink current 2>/dev/null); printf '%s\\0' "$cur"
for d in releases/* releases/.[!.]* releases/..?*; do
  if [ -e "$d" ] || [ -L "$d" ]; then printf '%s\\n' "${{d#releases/}}"; fi
done; printf '\\0'
[ -f .forge/log.jsonl ] && cat .forge/log.jsonl 2>/dev/null; printf '\\0'
m=".forge/manifests/${{cur##*/}}.json"
[ -n "$cur" ] && [ -f "$m" ] && cat "$m" 2>/dev/null; printf '\\0'
for p in {wanted}; do [ -e "shared/$p" ] && printf '%s\\n' "$p"; done; printf '\\0'
if [ ! -d releases ]; then
  for p in {site}; do [ -e "$p" ] && [ ! -L "$p" ] && printf '%s\\n' "$p"; done
fi; printf '\\0'
[ -f .forge/maintenance ] && cat .forge/maintenance 2>/dev/null; printf '\\0'
else printf 'absent\\0'
fi
"""


def observe(host: Host, layout: Layout, shared: Sequence[str] = (),
            known: Manifest | None = None) -> Observed:
    """What ``host`` holds at ``layout``; ``shared``: the shared paths to look for;
    ``known``: the manifest being deployed (see :func:`parse_observed`)."""
    return parse_observed(host.name, layout, host.run(observe_script(layout, shared)).stdout,
                          known)


def parse_observed(name: str, layout: Layout, output: bytes,
                   known: Manifest | None = None) -> Observed:
    """The facts in what :func:`observe_script` printed on host ``name``. The live
    release's manifest is read against ``known`` (:meth:`Manifest.from_bytes`)."""
    fields = output.split(b"\0")
    if fields[0] != b"present":
        return Observed(name)
    missing, notlink, link, listing, log, manifest, in_shared, in_site, maintenance = (
        fields + [b""] * 10)[1:10]
    if missing.strip():
        lacks: list[str] = missing.decode().split()
        named = ", ".join("GNU tar (the tar there is another one)" if t == "GNU-tar" else t
                          for t in lacks)
        raise ConnectError(
            f"{name} lacks {named}: forge cannot deploy there, nothing was changed",
            hint="install coreutils and GNU tar on the server; on shared hosting (a jailed "
                 "shell, CageFS) ask the host to add "
                 + " and ".join("GNU tar" if t.endswith("tar") else t for t in lacks)
                 + " to the account's shell")
    if notlink:
        raise RemoteCommandError(
            f"{layout.current} on {name} exists but is not a symlink",
            hint="move that directory away; forge manages current as a link to a release")
    current = link.decode().rstrip("/").split("/")[-1] or None
    parsed = None
    if current and manifest and _digest_agrees(current, manifest):
        try:
            parsed = Manifest.from_bytes(manifest, source=f"{name}:{layout.manifest(current)}",
                                         known=known)
        except ArtifactError:
            parsed = None  # a damaged stored manifest only costs a full send
    names = sorted(listing.decode().splitlines())
    return Observed(name, current, ReleaseLog.parse(log),
                    tuple(n for n in names if not n.startswith(".")),
                    tuple(n for n in names if n.startswith(STAGED_PREFIX)), parsed,
                    tuple(in_shared.decode().splitlines()), tuple(in_site.decode().splitlines()),
                    tuple(maintenance.decode(errors="replace").split()),
                    manifest if parsed is not None else b"")


_RELEASE_ID = re.compile(r"\d{8}T\d{6}Z-([0-9a-f]{8})(?:-\d+)?")


def _digest_agrees(release: str, manifest: bytes) -> bool:
    """Whether the stored manifest is the one the release was made from: a release
    id ends with its manifest's digest (:func:`forge_ci.deploy.releases.new_release_id`),
    so one cut short by a crash, or written wrong, is known and costs a full send."""
    m = _RELEASE_ID.fullmatch(release)
    return m is None or hashlib.sha256(manifest).hexdigest()[:8] == m.group(1)
