"""The steps of a deploy or rollback: each one operation on one host, with its arguments.

:mod:`forge_ci.deploy.plan` builds them from observed facts; ``--dry-run`` prints
them; :mod:`forge_ci.deploy.execute` runs them. Steps name releases by id; the
executor maps ids to paths on the target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from forge_ci.deploy.releases import Info, State


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
    """Delete release directories and their stored manifests. ``later``: each
    directory is renamed out of ``releases/`` at once (one rename, so the next run
    never sees it) and deleted in the background, off the run's critical path
    (deleting a release's thousands of entries takes far longer than the rename)."""

    op: ClassVar[str] = "remove_releases"
    releases: tuple[str, ...]
    why: str
    later: bool = False

    def describe(self) -> str:
        return (f"remove {self.why} releases {', '.join(self.releases)}"
                + (" (deleted in the background)" if self.later else ""))


@dataclass(frozen=True)
class Record(Step):
    """Append one event to the release log."""

    op: ClassVar[str] = "record"
    release: str
    state: State
    note: str = ""
    info: Info = ()  # commit, subject, run (see forge_ci.deploy.releases)

    def describe(self) -> str:
        return f"log {self.release} {self.state}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Adopt(Step):
    """Move a site's own copies of shared paths (a first deploy onto a site forge did
    not deploy) into ``shared/``, leaving a relative link where each was, so the old
    site keeps serving them until the switch."""

    op: ClassVar[str] = "adopt"
    paths: tuple[str, ...]

    def describe(self) -> str:
        return "adopt the existing site's " + ", ".join(
            f"{p} -> shared/{p}" for p in self.paths)


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
class TakeSnapshot(Step):
    """Snapshot the database to the environment's backup store (backup.before_deploy);
    its id goes with the release's "live" event."""

    op: ClassVar[str] = "take_snapshot"
    release: str

    def describe(self) -> str:
        return f"snapshot the database to the backup store before {self.release} goes live"


# Where WordPress looks for its maintenance file: ABSPATH, which is web/wp/ in Bedrock.
MAINTENANCE_FILE = "web/wp/.maintenance"


@dataclass(frozen=True)
class MaintenanceOn(Step):
    """Write WordPress's maintenance file in ``release`` (recorded in .forge first)."""

    op: ClassVar[str] = "maintenance_on"
    release: str

    def describe(self) -> str:
        return f"put up the maintenance file in {self.release} (recorded first)"


@dataclass(frozen=True)
class MaintenanceOff(Step):
    """Remove every maintenance file recorded in .forge, then the record."""

    op: ClassVar[str] = "maintenance_off"
    why: str = ""

    def describe(self) -> str:
        return "remove the maintenance file" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class RestoreDatabase(Step):
    """Import ``snapshot``'s database over the live one (rollback --with-database)."""

    op: ClassVar[str] = "restore_database"
    snapshot: str
    release: str

    def describe(self) -> str:
        return (f"restore the live database from snapshot {self.snapshot} "
                f"(taken before {self.release} went live)")


@dataclass(frozen=True)
class HostSteps:
    host: str
    steps: tuple[Step, ...]


Phase = tuple[HostSteps, ...]
