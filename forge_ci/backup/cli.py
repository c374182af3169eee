"""``forge-ci backup | snapshots | verify | restore | prune | keygen``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from forge_ci.backup import session
from forge_ci.backup.format.keys import format_identity_file, generate_identity
from forge_ci.backup.prune import prune
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.backup.take import BackupReport, take_snapshot
from forge_ci.backup.verify import verify_snapshot
from forge_ci.command import Common, Context
from forge_ci.errors import ConfigError, ForgeError, UsageError

ENV_HELP = "environment name from forge.yml"


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
    p.add_argument("--snapshot", metavar="ID", help="snapshot id or prefix (default: latest)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("restore", parents=[*both, common.dry_run],
                       help="restore a snapshot (over live data only with --yes)")
    p.add_argument("environment", help=ENV_HELP)
    p.add_argument("--snapshot", metavar="ID", help="snapshot id or prefix (default: latest)")
    p.add_argument("--yes", action="store_true", help="confirm overwriting live data")
    p.add_argument("--database", metavar="NAME",
                   help="restore the dump into this database instead (a drill)")
    p.add_argument("--to-dir", metavar="DIR",
                   help="restore files under this new or empty directory on the host instead")
    p.add_argument("--only", choices=("database", "files"), help="restore only this part")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("prune", parents=[*both, common.dry_run],
                       help="forget snapshots per backup.retention, delete unneeded objects")
    p.add_argument("environment", help=ENV_HELP)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("keygen", parents=[common.json],
                       help="make a backup key pair (identity + recipient)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", metavar="FILE", type=Path,
                   help="write the identity to FILE (mode 0600) instead of stdout")
    p.set_defaults(func=cmd_keygen)


def _target(ctx: Context) -> session.Target:
    return session.target(ctx.config(), ctx.args.environment)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def cmd_backup(ctx: Context) -> int:
    t = _target(ctx)
    with session.repository(t, ctx.environ) as repo, session.backup_host(t, ctx.environ) as host, \
            ctx.runner.group(f"back up {t.environment} from {host.name}"):
        report = take_snapshot(repo, session.source(t, host), t.backup_config,
                               dry_run=ctx.dry_run, log=ctx.runner.log,
                               show=ctx.runner.progress)
    if ctx.dry_run:
        db = t.backup_config.database.name if t.backup_config.database else None
        ctx.emit({**report.as_dict(), "database": db},
                 f"would dump database {db}\n" * bool(db)
                 + f"{report.files} files ({_size(report.file_bytes)}); "
                   f"{report.upload_files} to upload ({_size(report.upload_bytes)})")
        return 0
    assert report.snapshot_id is not None
    ctx.runner.set_output("snapshot-id", report.snapshot_id)
    ctx.runner.summary(_summary(t, report))
    ctx.emit(report.as_dict(), f"snapshot {report.snapshot_id}: {report.files} files "
             f"({_size(report.file_bytes)}) + database {_size(report.database_bytes)}; "
             f"uploaded {report.new_objects} new object(s), {_size(report.new_stored_bytes)} "
             f"in {report.seconds:.1f}s")
    return 0


def _summary(t: session.Target, r: BackupReport) -> str:
    return (f"### forge-ci backup: {t.environment}\n\n"
            f"Snapshot **{r.snapshot_id}** stored in `{t.backup_config.store}`.\n\n"
            "| | |\n|---|---|\n"
            f"| files | {r.files} ({_size(r.file_bytes)}) |\n"
            f"| database dump | {_size(r.database_bytes)} |\n"
            f"| new objects | {r.new_objects} |\n"
            f"| new bytes stored | {_size(r.new_stored_bytes)} |\n"
            f"| duration | {r.seconds:.1f}s |\n")


def cmd_snapshots(ctx: Context) -> int:
    t = _target(ctx)
    with session.repository(t, ctx.environ) as repo:
        rows = _snapshot_rows(repo)
    if not rows:
        ctx.emit({"snapshots": []}, f"no snapshots of {t.site}/{t.environment} yet")
        return 0
    lines = [f"{r['id']}  {r['time']}  {'verified' if r['verified'] else '        '}  "
             + _details(r) for r in rows]
    ctx.emit({"snapshots": rows}, "\n".join(lines))
    return 0


def _details(row: dict[str, object]) -> str:
    if "error" in row:
        return f"UNREADABLE: {row['error']}"
    if "files" not in row:
        return "(details need FORGE_BACKUP_IDENTITY)"
    db = f" + database {row['database']}" if row.get("database") else ""
    return f"{row['files']} files, {_size(float(str(row['bytes'])))}{db}"


def _snapshot_rows(repo: Repository) -> list[dict[str, object]]:
    verified = repo.verified_ids()
    rows: list[dict[str, object]] = []
    for ref in repo.refs():
        row: dict[str, object] = {"id": ref.id, "time": ref.time.isoformat(),
                                  "verified": ref.id in verified}
        if repo.can_read:
            try:
                m = repo.load(ref)
            except ForgeError as e:  # one damaged manifest must not hide the others
                row["error"] = e.message
            else:
                row |= {"time": m.time.isoformat(), "hostnames": list(m.hostnames),
                        "files": sum(1 for f in m.files if f.type == "file"),
                        "bytes": m.total_bytes,
                        "database": m.database.name if m.database else None}
        rows.append(row)
    return rows


def cmd_verify(ctx: Context) -> int:
    t = _target(ctx)
    with session.repository(t, ctx.environ) as repo:
        ref = repo.resolve(ctx.args.snapshot)
        with ctx.runner.group(f"verify {ref.id}"):
            report = verify_snapshot(repo, ref, log=ctx.runner.log, show=ctx.runner.progress)
    line = (f"snapshot {ref.id} verified: {report.objects} objects, "
            f"{_size(report.plain_bytes)} authenticated in {report.seconds:.1f}s")
    ctx.runner.summary(f"### forge-ci verify: {t.environment}\n\n{line}")
    ctx.emit(report.as_dict(), line)
    return 0


def cmd_restore(ctx: Context) -> int:
    t = _target(ctx)
    to_dir = ctx.args.to_dir
    if to_dir is not None and t.config.is_local:
        to_dir = os.path.abspath(to_dir)
    with session.repository(t, ctx.environ) as repo:
        ref = repo.resolve(ctx.args.snapshot)
        plan = plan_restore(ref, repo.load(ref), t.backup_config, t.root,
                            database=ctx.args.database, to_dir=to_dir, only=ctx.args.only)
        if ctx.dry_run:
            ctx.emit(plan.as_dict(), "would restore " + plan.describe())
            return 0
        with session.backup_host(t, ctx.environ) as host, \
                ctx.runner.group(f"restore {ref.id} on {host.name}"):
            report = run_restore(plan, repo, host, t.backup_config, yes=ctx.args.yes,
                                 log=ctx.runner.log, show=ctx.runner.progress)
    ctx.runner.summary(f"### forge-ci restore: {t.environment}\n\n```\n{plan.describe()}\n```\n"
                       f"Took {report.seconds:.1f}s.")
    ctx.emit(report.as_dict(), f"restored {plan.describe()}\nin {report.seconds:.1f}s")
    return 0


def cmd_prune(ctx: Context) -> int:
    t = _target(ctx)
    if t.backup_config.retention is None:
        raise ConfigError(f"environment {t.environment!r} has no backup.retention policy",
                          file=str(t.loaded.path), key=f"environments.{t.environment}.backup",
                          hint="add retention: { keep_daily: 14, keep_weekly: 8, ... }")
    with session.repository(t, ctx.environ) as repo, ctx.runner.group(f"prune {t.environment}"):
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
    identity = generate_identity()
    text = format_identity_file(identity)
    recipient = str(identity.recipient)
    if out is None:
        ctx.emit({"recipient": recipient, "identity": text.reveal().strip().splitlines()[-1]},
                 text.reveal() + f"# recipient (FORGE_BACKUP_RECIPIENT): {recipient}")
        return 0
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; refusing to overwrite a key",
                         hint="choose another --output path") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text.reveal())
    ctx.emit({"recipient": recipient, "identity_file": str(out)},
             f"identity written to {out} (mode 0600)\nrecipient: {recipient}")
    return 0
