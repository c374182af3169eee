"""Prune: forget snapshots the retention policy does not keep, then delete the data
objects no remaining snapshot references.

Plan, then act. :func:`plan_prune` only reads: every manifest in the store (all
sites and environments: a store may be shared, and their objects too), the verify
markers, the data listing, the locks. The policy applies to this environment's
group only, and counts only *trusted* snapshots (signed by a pinned signer, see
:mod:`forge_ci.backup.repo`); the newest snapshot with a valid verify marker is
always kept.

If any manifest of the group cannot be trusted - unsigned, wrongly signed, unreadable,
or junk under a snapshot's name - prune deletes nothing at all and names them
(:class:`UntrustedSnapshot`): someone who can only write to the bucket must not be
able to push real snapshots out of the retention counts. Other groups' manifests are
read for their references only (whatever signed them: they can only keep objects);
if one cannot be read, no data object is deleted (its references are unknown). The
plan runs under an exclusive lock, so no backup is between "this object exists" and
"my manifest references it".

Order of deletion: manifests (the snapshot disappears atomically), then their
signatures and verify markers, then unreferenced objects, then stale locks, then
uploads left by killed runs (multipart uploads, temporary files). An interrupted
prune leaves only unreferenced objects and orphan signatures or markers, which the
next one removes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from forge_ci.backup import layout
from forge_ci.backup.errors import UntrustedSnapshot
from forge_ci.backup.repo import Loaded, Repository, SnapshotRef
from forge_ci.backup.retention import Candidate, Decision, apply_policy, describe
from forge_ci.backup.snapshot import Manifest
from forge_ci.backup.store_lock import StoreLock, stale_locks
from forge_ci.config.backup import Retention
from forge_ci.errors import ForgeError


@dataclass
class PrunePlan:
    policy: str
    decisions: list[Decision]
    forget: list[SnapshotRef]
    delete: list[str]  # data object keys
    orphan_markers: list[str]  # verify markers and signatures without a snapshot
    stale_locks: list[str]
    unreadable: list[str] = field(default_factory=list)  # other groups' manifests
    untrusted: list[str] = field(default_factory=list)  # this group's: "<key>: <why>"
    protected: str | None = None
    abandoned_uploads: int = 0  # known only after the run: cleanup() reports it

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "snapshots": [{"id": d.id, "time": d.time.isoformat(), "keep": d.keep,
                           "reasons": list(d.reasons)} for d in self.decisions],
            "forget": [r.id for r in self.forget],
            "delete_objects": len(self.delete),
            "orphan_markers": len(self.orphan_markers),
            "stale_locks": len(self.stale_locks),
            "unreadable_manifests": self.unreadable,
            "untrusted_snapshots": self.untrusted,
            "newest_verified": self.protected,
            "abandoned_uploads": self.abandoned_uploads,
        }

    def render(self) -> str:
        if self.untrusted:
            return "\n".join([f"deleting nothing: {len(self.untrusted)} snapshot(s) of this "
                              "group cannot be trusted", *(f"  {u}" for u in self.untrusted)])
        lines = [self.policy]
        for d in self.decisions:
            why = ", ".join(d.reasons) if d.keep else "no rule keeps it"
            lines.append(f"  {'keep  ' if d.keep else 'forget'} {d.id}  {why}")
        lines.append(f"{len(self.forget)} snapshot(s) to forget, {len(self.delete)} "
                     f"unreferenced object(s) to delete")
        if self.unreadable:
            lines.append(f"not deleting any object: {len(self.unreadable)} manifest(s) "
                         "cannot be read with this identity")
        return "\n".join(lines)


def plan_prune(repo: Repository, policy: Retention, *, keep_oldest: bool = True) -> PrunePlan:
    """Decide what prune would delete. Reads only."""
    repo.identities  # noqa: B018 - no identity is a missing secret, not untrusted snapshots
    mine = repo.refs()
    trusted: dict[SnapshotRef, Loaded] = {}
    untrusted: list[str] = []
    for ref in mine:
        try:
            trusted[ref] = repo.open_manifest(ref)
        except ForgeError as e:
            untrusted.append(f"{ref.key}: {e.message}")
    if untrusted:
        return PrunePlan(policy=describe(policy), decisions=[], forget=[], delete=[],
                         orphan_markers=[], stale_locks=[], untrusted=untrusted)
    manifests: dict[SnapshotRef, Manifest] = {r: v.manifest for r, v in trusted.items()}
    unreadable: list[str] = []
    for ref in repo.refs(all_groups=True):
        if ref in manifests:
            continue
        try:
            manifests[ref] = repo.open_manifest(ref, trust=False).manifest
        except ForgeError:
            unreadable.append(f"{ref.site}/{ref.environment}/{ref.id}")
    times = {r: trusted[r].manifest.time for r in mine}
    markers = repo.marker_ids()
    newest_verified = max((r for r in mine if r.id in markers and repo.is_verified(trusted[r])),
                          key=lambda r: times[r], default=None)
    protect = [newest_verified.id] if newest_verified else []
    decisions = apply_policy([Candidate(r.id, times[r]) for r in mine], policy,
                             protect=protect, keep_oldest=keep_oldest)
    keep = {d.id for d in decisions if d.keep}
    forget = [r for r in mine if r.id not in keep]
    gone = set(forget)
    referenced: set[str] = set()
    for ref, manifest in manifests.items():
        if ref not in gone:
            referenced |= manifest.objects()
    delete = [] if unreadable else sorted(repo.data_keys() - referenced)
    live_ids = {r.id for r in mine if r not in gone}
    orphans = [layout.verified_key(repo.site, repo.environment, i)
               for i in sorted(markers - live_ids)]
    orphans += [layout.signature_key(repo.site, repo.environment, i)
                for i in sorted(repo.group_ids(layout.SIGNATURES) - live_ids)]
    return PrunePlan(
        policy=describe(policy), decisions=decisions, forget=forget, delete=delete,
        orphan_markers=orphans, stale_locks=[lock.key for lock in stale_locks(repo.store)],
        unreadable=unreadable, protected=newest_verified.id if newest_verified else None)


def _refuse(repo: Repository, plan: PrunePlan) -> None:
    if plan.untrusted:
        raise UntrustedSnapshot(
            f"prune of {repo.site}/{repo.environment} deletes nothing: "
            f"{len(plan.untrusted)} snapshot(s) cannot be trusted\n  "
            + "\n  ".join(plan.untrusted),
            hint="retention counts only signed snapshots. Ones made before backup.signers "
                 "was set are accepted with --allow-unsigned; objects you did not write "
                 "were put there by someone with write access to the store: delete them "
                 "(and rotate that access)")


def prune(repo: Repository, policy: Retention, *, dry_run: bool = False,
          log: Callable[[str], None] = lambda _m: None, keep_oldest: bool = True) -> PrunePlan:
    """Plan, and unless ``dry_run`` carry out the plan under an exclusive lock."""
    if dry_run:
        plan = plan_prune(repo, policy, keep_oldest=keep_oldest)
        _refuse(repo, plan)
        return plan
    with StoreLock(repo.store, "exclusive", repo.recipients,
                   who=f"prune of {repo.site}/{repo.environment}"):
        plan = plan_prune(repo, policy, keep_oldest=keep_oldest)
        _refuse(repo, plan)
        for ref in plan.forget:
            log(f"forgetting snapshot {ref.id}")
            repo.forget(ref)
        for key in plan.delete:
            repo.store.delete(key)
        for key in plan.orphan_markers + plan.stale_locks:
            repo.store.delete(key)
        # Under the exclusive lock no writer is live: every unfinished upload or temp
        # file is a killed run's leftover, however young.
        plan.abandoned_uploads = repo.store.cleanup(older_than=0.0)
        if plan.abandoned_uploads:
            log(f"removed {plan.abandoned_uploads} abandoned upload(s)")
    log(f"deleted {len(plan.delete)} unreferenced object(s)")
    return plan
