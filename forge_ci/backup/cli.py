"""``forge-ci backup | snapshots | verify | restore | prune | keygen``."""

from __future__ import annotations

import argparse
import gc
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from forge_ci.backup import session
from forge_ci.backup.drill import DrillFailed, run_drill, scratch_names
from forge_ci.backup.errors import UntrustedSnapshot
from forge_ci.backup.format.keys import Secret, format_identity_file, generate_identity
from forge_ci.backup.prune import prune
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.backup.signing import SigningKey, format_signing_key_file
from forge_ci.backup.take import BackupReport, take_snapshot
from forge_ci.backup.verify import verify_snapshot
from forge_ci.command import Common, Context
from forge_ci.errors import ConfigError, ForgeError, UsageError
from forge_ci.units import human_size

ENV_HELP = "environment name from forge.yml"
UNSIGNED_HELP = (
    "also accept snapshots that carry no signature (made before backup.signers was set). "
    "This skips the check that a pinned signer wrote them: anyone holding the recipient "
    "and write access to the store can make such a snapshot. A wrong signature is "
    "never accepted")


def register(sub: Any, common: Common) -> None:
    both = [common.config, common.json]
    p = sub.add_parser("backup", parents=[*both, common.dry_run],
                       help="take an encrypted snapshot: database dump plus uploads")
    p.add_argument("environment", help=ENV_HELP)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("snapshots", parents=both, help="list snapshots, oldest first")
    p.add_argument("environment", help=ENV_HELP)
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("verify", parents=both,
                       help="download and authenticate every object of a snapshot")
    p.add_argument("environment", help=ENV_HELP)
    p.add_argument("--snapshot", metavar="ID",
                   help="snapshot id or prefix (default: the latest trusted one)")
    p.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("restore", parents=[*both, common.dry_run],
                       help="restore a snapshot (over live data only with --yes)")
    p.add_argument("environment", help=ENV_HELP)
    p.add_argument("--snapshot", metavar="ID",
                   help="snapshot id or prefix (default: the latest trusted one)")
    p.add_argument("--yes", action="store_true", help="confirm overwriting live data")
    p.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    p.add_argument("--database", metavar="NAME",
                   help="restore the dump into this database instead (a drill)")
    p.add_argument("--to-dir", metavar="DIR",
                   help="restore files under this new or empty directory on the host instead")
    p.add_argument("--only", choices=("database", "files"), help="restore only this part")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("drill", parents=[*both, common.dry_run],
                       help="restore the latest snapshot into a scratch database and "
                            "directory, check it, remove it")
    p.add_argument("environment", help=ENV_HELP)
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("prune", parents=[*both, common.dry_run],
                       help="forget snapshots per backup.retention, delete unneeded objects")
    p.add_argument("environment", help=ENV_HELP)
    p.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("keygen", parents=[common.json],
                       help="make a backup key pair (identity + recipient), or with "
                            "--signing a signing key pair",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", metavar="FILE", type=Path,
                   help="write the private key to FILE (mode 0600) instead of stdout")
    p.add_argument("--signing", action="store_true",
                   help="make a signing key: the private key for FORGE_BACKUP_SIGNING_KEY "
                        "and the public line for forge.yml's backup.signers")
    p.set_defaults(func=cmd_keygen)


def _target(ctx: Context) -> session.Target:
    t = session.target(ctx.config(), ctx.args.environment)
    warning = session.unauthenticated_warning(t)
    if warning:
        ctx.runner.warning(warning)
    return t


def _repository(ctx: Context, t: session.Target) -> AbstractContextManager[Repository]:
    return session.repository(t, ctx.environ,
                              allow_unsigned=bool(getattr(ctx.args, "allow_unsigned", False)))


def cmd_backup(ctx: Context) -> int:
    t = _target(ctx)
    with _repository(ctx, t) as repo, session.backup_host(t, ctx.environ) as host, \
            ctx.runner.group(f"back up {t.environment} from {host.name}"):
        report = take_snapshot(repo, session.source(t, host), t.backup_config,
                               dry_run=ctx.dry_run, log=ctx.runner.log,
                               show=ctx.runner.progress)
    if ctx.dry_run:
        db = t.backup_config.database.name if t.backup_config.database else None
        ctx.emit({**report.as_dict(), "database": db},
                 f"would dump database {db}\n" * bool(db)
                 + f"{report.files} files ({human_size(report.file_bytes)}); "
                   f"{report.upload_files} to upload ({human_size(report.upload_bytes)})")
        return 0
    assert report.snapshot_id is not None
    ctx.runner.set_output("snapshot-id", report.snapshot_id)
    ctx.outcome.update(
        summary=f"snapshot {report.snapshot_id} stored ({report.files} files)",
        details={"snapshot": report.snapshot_id, "files": report.files,
                 "bytes": report.file_bytes + report.database_bytes,
                 "new_bytes": report.new_stored_bytes, "seconds": report.seconds,
                 **report.phases})
    ctx.runner.summary(_summary(t, report))
    ctx.emit(report.as_dict(), f"snapshot {report.snapshot_id}: {report.files} files "
             f"({human_size(report.file_bytes)}) + database {human_size(report.database_bytes)}; "
             f"uploaded {report.new_objects} new object(s), {human_size(report.new_stored_bytes)} "
             f"in {report.seconds:.1f}s")
    return 0


def _summary(t: session.Target, r: BackupReport) -> str:
    return (f"### forge-ci backup: {t.environment}\n\n"
            f"Snapshot **{r.snapshot_id}** stored in `{t.backup_config.store}`.\n\n"
            "| | |\n|---|---|\n"
            f"| files | {r.files} ({human_size(r.file_bytes)}) |\n"
            f"| database dump | {human_size(r.database_bytes)} |\n"
            f"| new objects | {r.new_objects} |\n"
            f"| new bytes stored | {human_size(r.new_stored_bytes)} |\n"
            f"| duration | {r.seconds:.1f}s |\n"
            + "".join(f"| {name.removesuffix('_s')} phase | {value:.1f}s |\n"
                      for name, value in r.phases.items()))


def cmd_snapshots(ctx: Context) -> int:
    t = _target(ctx)
    with _repository(ctx, t) as repo:
        rows = _snapshot_rows(repo)
    if not rows:
        ctx.emit({"snapshots": []}, f"no snapshots of {t.site}/{t.environment} yet")
        return 0
    lines = [f"{r['id']}  {r['time']}  {'verified' if r['verified'] else '        '}  "
             + _details(r) for r in rows]
    ctx.emit({"snapshots": rows}, "\n".join(lines))
    return 0


def _details(row: dict[str, object]) -> str:
    if row["trust"] == "unreadable":
        return f"UNREADABLE: {row['error']}"
    if row["trust"] == "untrusted":
        return f"UNTRUSTED: {row['error']}"
    if "files" not in row:
        return "(details and signatures need FORGE_BACKUP_IDENTITY)"
    db = f" + database {row['database']}" if row.get("database") else ""
    how = "signed" if row["trust"] == "signed" else "UNSIGNED"
    return f"{how}  {row['files']} files, {human_size(float(str(row['bytes'])))}{db}"


def _snapshot_rows(repo: Repository) -> list[dict[str, object]]:
    """Every key under the group, each with what can be said of it: ``trust`` is
    ``signed``, ``unsigned`` (accepted: nothing pinned, or --allow-unsigned),
    ``untrusted`` or ``unreadable`` (with ``error``), or ``unknown`` without the identity."""
    markers = repo.marker_ids() if repo.can_read else set()
    rows: list[dict[str, object]] = []
    for ref in repo.refs():
        row: dict[str, object] = {"id": ref.id, "time": ref.time.isoformat(),
                                  "verified": False, "trust": "unknown"}
        if repo.can_read:
            try:
                loaded = repo.open_manifest(ref)
            except UntrustedSnapshot as e:
                row |= {"trust": "untrusted", "error": e.message}
            except ForgeError as e:  # one damaged manifest must not hide the others
                row |= {"trust": "unreadable", "error": e.message}
            else:
                m = loaded.manifest
                row |= {"time": m.time.isoformat(), "hostnames": list(m.hostnames),
                        "trust": "signed" if loaded.signer else "unsigned",
                        "signer": str(loaded.signer) if loaded.signer else None,
                        "verified": ref.id in markers and repo.is_verified(loaded),
                        "files": sum(1 for f in m.files if f.type == "file"),
                        "bytes": m.total_bytes,
                        "database": m.database.name if m.database else None,
                        "stats": dict(m.stats)}
        rows.append(row)
    return rows


def cmd_verify(ctx: Context) -> int:
    t = _target(ctx)
    with _repository(ctx, t) as repo:
        ref = repo.pick(ctx.args.snapshot, warn=ctx.runner.warning).ref
        with ctx.runner.group(f"verify {ref.id}"):
            report = verify_snapshot(repo, ref, log=ctx.runner.log, show=ctx.runner.progress)
    line = (f"snapshot {ref.id} verified: {report.objects} objects, "
            f"{human_size(report.plain_bytes)} authenticated in {report.seconds:.1f}s")
    ctx.runner.summary(f"### forge-ci verify: {t.environment}\n\n{line}")
    ctx.emit(report.as_dict(), line)
    return 0


def cmd_restore(ctx: Context) -> int:
    t = _target(ctx)
    to_dir = ctx.args.to_dir
    if to_dir is not None and t.config.is_local:
        to_dir = os.path.abspath(to_dir)
    preview = t.config.preview.link if t.config.preview else None
    with _repository(ctx, t) as repo:
        loaded = repo.pick(ctx.args.snapshot, warn=ctx.runner.warning)
        plan = plan_restore(loaded.ref, loaded.manifest, t.backup_config, t.root,
                            database=ctx.args.database, to_dir=to_dir, only=ctx.args.only,
                            preview_link=preview)
        if ctx.dry_run:
            ctx.emit(plan.as_dict(), "would restore " + plan.describe())
            return 0
        # Everything alive now (modules, the S3 client, the manifest) outlives the
        # restore: keep the collector from walking it again for every few MiB restored.
        gc.freeze()
        with session.restore_host(t, ctx.environ, lock=bool(plan.live_targets()),
                                  log=ctx.runner.log) as host, \
                ctx.runner.group(f"restore {loaded.ref.id} on {host.name}"):
            report = run_restore(plan, repo, host, t.backup_config, yes=ctx.args.yes,
                                 log=ctx.runner.log, show=ctx.runner.progress)
    ctx.runner.summary(f"### forge-ci restore: {t.environment}\n\n```\n{plan.describe()}\n```\n"
                       f"Took {report.seconds:.1f}s.")
    ctx.emit(report.as_dict(), f"restored {plan.describe()}\nin {report.seconds:.1f}s")
    return 0


def cmd_drill(ctx: Context) -> int:
    t = _target(ctx)
    drill = t.config.drill
    with session.repository(t, ctx.environ) as repo:
        if ctx.dry_run:
            ref = repo.resolve(None)
            database, directory = scratch_names(t.backup_config, drill, t.root, ref.id)
            ctx.emit({"snapshot": ref.id, "database": database, "directory": directory,
                      "url": drill.url},
                     f"would restore {ref.id} into database {database} and {directory}, "
                     "check it, then drop both")
            return 0
        with session.backup_host(t, ctx.environ) as host, \
                ctx.runner.group(f"restore drill of {t.environment} on {host.name}"):
            report = run_drill(repo, host, t.backup_config, drill, t.root, log=ctx.runner.log)
    verdict = "passed" if report.ok else "FAILED"
    lines = [f"drill of snapshot {report.snapshot} {verdict} in {report.seconds:.1f}s: "
             f"{report.tables} tables, {report.rows} rows, {report.files} files"
             + (f", {drill.url} answered {report.url_status}" if drill.url else ""),
             *(f"  problem: {p}" for p in report.problems)]
    ctx.runner.summary(f"### forge-ci drill: {t.environment} {verdict}\n\n"
                       "| snapshot | tables | rows | files | seconds |\n|---|---|---|---|---|\n"
                       f"| {report.snapshot} | {report.tables} | {report.rows} | "
                       f"{report.files} | {report.seconds:.1f} |\n"
                       + "".join(f"\n- {p}" for p in report.problems))
    ctx.emit(report.as_dict(), "\n".join(lines))
    ctx.outcome.update(summary=lines[0], details={
        "snapshot": report.snapshot, "tables": report.tables, "rows": report.rows,
        "files": report.files, "seconds": report.seconds})
    if not report.ok:
        raise DrillFailed(f"restore drill of {t.environment} (snapshot {report.snapshot}) "
                          f"failed: {'; '.join(report.problems)}",
                          hint="look at the snapshot with `forge-ci verify` and the "
                               "backup's log; take a new backup once the cause is fixed")
    return 0


def cmd_prune(ctx: Context) -> int:
    t = _target(ctx)
    if t.backup_config.retention is None:
        raise ConfigError(f"environment {t.environment!r} has no backup.retention policy",
                          file=str(t.loaded.path), key=f"environments.{t.environment}.backup",
                          hint="add retention: { keep_daily: 14, keep_weekly: 8, ... }")
    with _repository(ctx, t) as repo, ctx.runner.group(f"prune {t.environment}"):
        plan = prune(repo, t.backup_config.retention, dry_run=ctx.dry_run, log=ctx.runner.log)
    if not ctx.dry_run:
        ctx.runner.summary(f"### forge-ci prune: {t.environment}\n\n```\n{plan.render()}\n```")
    ctx.emit({**plan.as_dict(), "dry_run": ctx.dry_run}, plan.render())
    return 0


def cmd_keygen(ctx: Context) -> int:
    out: Path | None = ctx.args.output
    if out is None and ctx.runner.in_actions:
        raise UsageError("keygen would print a private key into the job log",
                         hint="run it on your machine, or pass --output FILE")
    if ctx.args.signing:
        key = SigningKey.generate()
        public = str(key.public)
        data: dict[str, str] = {"signer": public}
        text = format_signing_key_file(key)
        secret_line = key.to_secret().reveal()
        human = (f"forge.yml: backup: {{ signers: [\"{public}\"] }}  (the private key "
                 "goes into the secret FORGE_BACKUP_SIGNING_KEY)")
        key_name = "signing_key"
    else:
        identity = generate_identity()
        public = str(identity.recipient)
        data = {"recipient": public}
        text = format_identity_file(identity)
        secret_line = text.reveal().strip().splitlines()[-1]
        human = f"recipient (FORGE_BACKUP_RECIPIENT): {public}"
        key_name = "identity"
    if out is None:
        ctx.emit({**data, key_name: secret_line}, text.reveal() + f"# {human}")
        return 0
    _write_key(out, text)
    ctx.emit({**data, f"{key_name}_file": str(out)},
             f"{key_name.replace('_', ' ')} written to {out} (mode 0600)\n{human}")
    return 0


def _write_key(out: Path, text: Secret) -> None:
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; refusing to overwrite a key",
                         hint="choose another --output path") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text.reveal())
