"""``forge-ci sync FROM TO`` and ``forge-ci sync-undo TO ID``.

Order of a sync, each step only after the previous one succeeded:

1. Refusals, before any connection: an unknown environment, FROM = TO, a protected TO
   (``protected: true``, the default for ``production``) without ``--confirm TO``.
2. TO's hosts are connected and locked with the deploy lock (a running deploy, rollback
   or sync makes this one stop, and the other way round).
3. The rules: FROM's URLs (config ``url``; ``home`` and ``siteurl`` from FROM's database
   when the source is live) become TO's (config ``url``, else TO's own ``home``), after
   the pairs of TO's ``sync.replace``.
4. With ``--dry-run`` the dump is read and counted (nothing is written, nothing locked)
   and the uploads are compared.
5. TO's database is dumped on TO's host (the undo snapshot, see
   :mod:`forge_ci.sync.database`) and the undo command is printed.
6. FROM's dump (live ``mariadb-dump`` over SSH, or the snapshot's dump object) streams
   through the rewriter (URLs, ``sync.exclude_tables``, ``sync.anonymize``) into
   ``mariadb`` on TO's host. Then transients are deleted and, unless TO is protected,
   ``blog_public`` is set to 0.
7. Changed uploads travel (:mod:`forge_ci.sync.uploads`); ``after_sync`` hooks run in
   TO's live release on each host.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_ci.command import Common, Context
from forge_ci.config import EnvironmentConfig, LoadedConfig, load
from forge_ci.config.backup import DatabaseConfig
from forge_ci.deploy.lock import Lock, owner_info
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ConfigError, ForgeError, SyncError, UsageError
from forge_ci.remote import Host, sh
from forge_ci.sync import database
from forge_ci.sync.anonymize import Anonymizer
from forge_ci.sync.replace import Rules
from forge_ci.sync.sqldump import Options, Report, count_dump, rewrite_dump
from forge_ci.targets import open_hosts, target_root

if TYPE_CHECKING:
    # Loaded where used: a database sync from live FROM never reads a backup
    # repository or copies files, and start-up is part of its time.
    from forge_ci.backup.repo import Repository
    from forge_ci.backup.snapshot import Manifest
    from forge_ci.sync import uploads


# Statements the rewriter may hold ahead of the import (bytes): the room it needs to
# keep working while the server imports a large table (see "Table order" in
# forge_ci/sync/database.py), and most of a sync's peak memory. Past the first
# PACKED_ABOVE bytes they wait zstd-compressed (3-5 times smaller), so the rewriter can
# be about 100 MiB of statements ahead: enough to rewrite the options-like tables while
# the server is still importing the posts.
REWRITTEN_AHEAD = 32 * 1024 * 1024
PACKED_ABOVE = 8 * 1024 * 1024


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("sync", parents=[common.config, common.json, common.dry_run],
                       help="copy FROM's database and uploads into TO, URLs rewritten")
    p.add_argument("source", metavar="FROM", help="environment to copy from")
    p.add_argument("target", metavar="TO", help="environment to overwrite")
    p.add_argument("--database", action="store_true", help="sync the database (default: both)")
    p.add_argument("--uploads", action="store_true", help="sync the uploads (default: both)")
    p.add_argument("--snapshot", metavar="ID",
                   help="read FROM's backup snapshot (an id or 'latest') instead of live FROM")
    p.add_argument("--confirm", metavar="NAME", help="TO's name: required when TO is protected")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("sync-undo", parents=[common.config, common.json],
                       help="put TO's database back as it was before a sync")
    p.add_argument("environment", help="the sync's TO")
    p.add_argument("snapshot_id", metavar="ID", help="the id the sync printed")
    p.add_argument("--confirm", metavar="NAME", help="TO's name: required when TO is protected")
    p.set_defaults(func=cmd_undo)


@dataclass(frozen=True)
class _Env:
    name: str
    config: EnvironmentConfig
    root: str
    loaded: LoadedConfig

    def db(self) -> DatabaseConfig:
        db = self.config.site_database
        if db is None:
            raise ConfigError(f"environment {self.name!r} has no database",
                              file=str(self.loaded.path), key=f"environments.{self.name}",
                              hint='add database: { name, user, password: "${DB_PASSWORD}" }')
        return db


@dataclass
class SyncReport:
    source: str
    target: str
    from_snapshot: str | None
    dry_run: bool
    pairs: list[tuple[str, str]]
    database: Report | None = None
    upload: uploads.UploadPlan | None = None
    undo_id: str | None = None
    undo_command: str | None = None
    hooks: int = 0
    seconds: float = 0.0
    # Phase durations (``*_s``) and sizes, as deploys and backups record theirs.
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        db: dict[str, object] | None = None
        if self.database is not None:
            r = self.database
            db = {"changed": {f"{t}.{c}": n for (t, c), n in sorted(r.changed.items())},
                  "unparsable": {f"{t}.{c}": n for (t, c), n in sorted(r.unparsable.items())},
                  "scrubbed_rows": dict(sorted(r.scrubbed.items())),
                  "excluded_tables": sorted(r.excluded_statements),
                  "total_changed": r.total_changed}
        return {"from": self.source, "to": self.target, "snapshot": self.from_snapshot,
                "dry_run": self.dry_run, "replace": [list(p) for p in self.pairs],
                "database": db, "uploads": self.upload.as_dict() if self.upload else None,
                "undo_id": self.undo_id, "undo_command": self.undo_command,
                "hooks": self.hooks, "seconds": self.seconds, "metrics": dict(self.metrics)}

    def render(self) -> str:
        verb = "would sync" if self.dry_run else "synced"
        src = f"{self.source} (snapshot {self.from_snapshot})" if self.from_snapshot \
            else self.source
        lines = [f"{verb} {src} -> {self.target}"]
        lines += [f"  replace {a} -> {b}" for a, b in self.pairs]
        if self.database is not None:
            r = self.database
            lines.append(f"database: {r.total_changed} values rewritten, "
                         f"{r.total_unparsable} left untouched (unparsable)")
            lines += [f"  {line}" for line in r.lines()]
            lines += [f"  {t}: {n} rows anonymized" for t, n in sorted(r.scrubbed.items())]
            if r.excluded_statements:
                lines.append(f"  excluded tables: {', '.join(sorted(r.excluded_statements))}")
        if self.upload is not None:
            u = self.upload
            lines.append(f"uploads: {len(u.changed)} of {len(u.files)} files changed "
                         f"({u.bytes} bytes) into {u.folder}")
        if self.undo_command:
            lines.append(f"undo: {self.undo_command}")
        return "\n".join(lines)


def _environments(ctx: Context) -> tuple[_Env, _Env]:
    """FROM and TO, each read with only its own ``${VAR}``\\s required (as deploy reads
    one environment): a third environment's secrets are never needed."""
    a = ctx.args
    # TO is the environment the run is about (its events, its step summary).
    a.environment = a.target
    from_loaded = load(Path(getattr(a, "config", None) or "forge.yml"), ctx.environ, a.source)
    for value in from_loaded.secrets:
        ctx.runner.mask(value)
    found = []
    for name, loaded in ((a.source, from_loaded), (a.target, ctx.config())):
        config = loaded.environment(name)
        found.append(_Env(name, config, target_root(config, loaded.root), loaded))
    source, target = found
    if a.source == a.target:
        raise UsageError(f"sync {a.source} {a.target}: FROM and TO are the same environment")
    _confirm(target, a.confirm, dry_run=ctx.dry_run)
    return source, target


def _confirm(target: _Env, confirm: str | None, *, dry_run: bool) -> None:
    if confirm is not None and confirm != target.name:
        raise UsageError(f"--confirm {confirm!r} does not name the target {target.name!r}")
    if target.config.is_protected(target.name) and confirm is None and not dry_run:
        raise SyncError(f"{target.name} is protected: a sync would overwrite its live data",
                        hint=f"pass --confirm {target.name} if that is really meant "
                             "(nothing was changed)")


def _db_host(env: _Env, hosts: list[Host]) -> Host:
    backup = env.config.backup
    if backup is not None and backup.host is not None and not env.config.is_local:
        for h, cfg in zip(hosts, env.config.hosts, strict=True):
            if cfg.host == backup.host:
                return h
    return hosts[0]


@contextlib.contextmanager
def _connected(config: EnvironmentConfig, ctx: Context) -> Iterator[list[Host]]:
    hosts = open_hosts(config, ctx.environ)
    try:
        yield hosts
    finally:
        for h in hosts:
            h.close()


@contextlib.contextmanager
def _locked(target: _Env, hosts: list[Host], ctx: Context, what: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for h in hosts:
            stack.enter_context(Lock(h, Layout(target.root), owner_info(ctx.environ, what),
                                     wait=target.config.lock_wait))
        yield


def url_pairs(source_urls: Iterable[str | None], site_url: str | None, target_url: str,
              target_site_url: str | None,
              extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """TO's ``sync.replace`` pairs first, then each distinct FROM home URL → TO's; FROM's
    ``siteurl`` gets a pair of its own only when it is not under one of those."""
    pairs = [(a, b) for a, b in extra]
    target = target_url.rstrip("/")
    homes: list[str] = []
    for url in source_urls:
        if url and url.rstrip("/") not in homes:
            homes.append(url.rstrip("/"))
    pairs += [(h, target) for h in homes if h != target]
    if site_url:
        site = site_url.rstrip("/")
        if not any(site == h or site.startswith(h + "/") for h in homes):
            dest = (target_site_url or target).rstrip("/")
            if site != dest:
                pairs.append((site, dest))
    return pairs


@dataclass
class _Source:
    """Where FROM's data comes from: its live host, or a snapshot in its repository."""

    host: Host | None = None
    repo: Repository | None = None
    manifest: Manifest | None = None
    snapshot_id: str | None = None
    urls: dict[str, str] | None = None  # home and siteurl from the live database
    tables: list[str] = field(default_factory=list)  # the live dump's order, [] its own

    def dump(self, source: _Env, exclude: Sequence[str]) -> Iterator[bytes]:
        if self.repo is not None and self.manifest is not None:
            from forge_ci.backup.objects import checked

            entry = self.manifest.database
            assert entry is not None
            return checked(self.repo.open(entry.object), sha256=entry.sha256,
                           size=entry.size, what=f"database dump {entry.object}")
        return database.dump(_req(self.host), source.db(), exclude, self.tables)


def _open_source(ctx: Context, stack: contextlib.ExitStack, source: _Env, *,
                 want_db: bool, prefix: str, exclude: Sequence[str]) -> _Source:
    if not ctx.args.snapshot:
        hosts = stack.enter_context(_connected(source.config, ctx))
        host = _db_host(source, hosts)
        if not want_db:
            return _Source(host=host, urls={})
        urls, tables = database.look(host, source.db(), prefix)
        return _Source(host=host, urls=urls, tables=database.dump_order(tables, exclude))
    from forge_ci.backup import session

    repo = stack.enter_context(session.repository(session.target(source.loaded, source.name),
                                                  ctx.environ))
    # Authenticated as restore does (pinned signers): "latest" is the newest trusted
    # snapshot; newer untrusted ones are named and skipped.
    picked = repo.pick(ctx.args.snapshot, warn=ctx.runner.warning)
    if want_db and picked.manifest.database is None:
        raise SyncError(f"snapshot {picked.ref.id} of {source.name} holds no database",
                        hint="pass --uploads, or choose another snapshot")
    return _Source(repo=repo, manifest=picked.manifest, snapshot_id=picked.ref.id)


def _rules(source: _Env, target: _Env, src: _Source, to_host: Host,
           to_db: DatabaseConfig) -> tuple[list[tuple[str, str]], Rules, Options]:
    cfg = target.config.sync
    to_urls = database.home_urls(to_host, to_db, cfg.table_prefix)
    to_url = target.config.url or to_urls.get("home")
    if not to_url:
        raise ConfigError(f"environment {target.name!r} has no url and its database has no "
                          "home option to take it from", file=str(target.loaded.path),
                          key=f"environments.{target.name}.url")
    urls = src.urls or {}
    pairs = url_pairs([source.config.url, urls.get("home")], urls.get("siteurl"), to_url,
                      to_urls.get("siteurl"), cfg.replace)
    if not pairs:
        raise SyncError(f"nothing tells {source.name}'s URL from {target.name}'s",
                        hint=f"set url for {source.name} in forge.yml, or sync.replace")
    options = Options(exclude_tables=frozenset(cfg.exclude_tables),
                      scrub=Anonymizer.default(cfg.table_prefix) if cfg.anonymize else None)
    return pairs, Rules.from_pairs(pairs), options


def _copy_database(ctx: Context, source: _Env, target: _Env, src: _Source, to_host: Host,
                   to_db: DatabaseConfig, report: SyncReport) -> None:
    cfg = target.config.sync
    report.pairs, rules, options = _rules(source, target, src, to_host, to_db)
    if ctx.dry_run:
        with ctx.runner.group(f"read {source.name}'s database (dry run)"):
            report.database = count_dump(src.dump(source, cfg.exclude_tables), rules, options)
        return
    report.undo_id = database.new_snapshot_id()
    with ctx.runner.group(f"undo snapshot of {target.name}'s database"):
        path = database.take_snapshot(to_host, to_db, target.root, report.undo_id)
        ctx.runner.log(f"{to_host.name}: {path}")
    report.undo_command = _undo_command(ctx, target, report.undo_id)
    ctx.runner.log(f"to undo this sync: {report.undo_command}")
    report.database = Report()
    with ctx.runner.group(f"database {source.name} -> {target.name}"):
        try:
            # Three stages in step: read FROM, rewrite, write TO. The rewriter may run
            # up to REWRITTEN_AHEAD bytes of statements ahead of the import, so it goes
            # on while the server works through a large table.
            stream = database.ahead(rewrite_dump(
                database.ahead(src.dump(source, cfg.exclude_tables), depth=16), rules,
                options, report.database), depth=1024, max_bytes=REWRITTEN_AHEAD,
                pack_above=PACKED_ABOVE)
            try:
                database.load(to_host, to_db, stream)
            finally:
                stream.close()
            database.after_import(to_host, to_db, cfg.table_prefix,
                                  public=target.config.is_protected(target.name))
        except ForgeError as e:
            raise SyncError(f"the sync into {target.name} failed: {e.message}",
                            hint=f"{target.name}'s database may be partly imported; undo "
                                 f"with: {report.undo_command}") from None


def _copy_uploads(ctx: Context, source: _Env, target: _Env, src: _Source,
                  to_hosts: list[Host], report: SyncReport) -> None:
    from forge_ci.sync import uploads

    rel = uploads.folder(target.config.sync.uploads)
    files = (uploads.snapshot_files(src.manifest, rel) if src.manifest is not None
             else uploads.live_files(_req(src.host), source.root, rel))
    report.upload = uploads.plan(files, to_hosts[0], target.root, rel)
    if ctx.dry_run:
        return
    with ctx.runner.group(f"uploads {source.name} -> {target.name}"):
        for h in to_hosts:
            plan = uploads.plan(files, h, target.root, rel)
            if src.manifest is not None and src.repo is not None:
                uploads.copy_snapshot(plan, src.manifest, src.repo, h, target.root)
            else:
                uploads.copy_live(plan, _req(src.host), source.root, h, target.root)


def cmd_sync(ctx: Context) -> int:
    started = time.monotonic()
    source, target = _environments(ctx)
    want_db = ctx.args.database or not ctx.args.uploads
    want_uploads = ctx.args.uploads or not ctx.args.database
    to_db = target.db() if want_db else None
    with contextlib.ExitStack() as stack:
        to_hosts = stack.enter_context(_connected(target.config, ctx))
        if not ctx.dry_run:
            stack.enter_context(_locked(target, to_hosts, ctx, f"sync {source.name}"))
        to_host = _db_host(target, to_hosts)
        src = _open_source(ctx, stack, source, want_db=want_db,
                           prefix=target.config.sync.table_prefix,
                           exclude=target.config.sync.exclude_tables)
        report = SyncReport(source.name, target.name, src.snapshot_id, ctx.dry_run, [])
        mark = time.monotonic()
        if to_db is not None:
            _copy_database(ctx, source, target, src, to_host, to_db, report)
            report.metrics["database_s"] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        if want_uploads:
            _copy_uploads(ctx, source, target, src, to_hosts, report)
            report.metrics["uploads_s"] = round(time.monotonic() - mark, 3)
            if report.upload is not None:
                report.metrics["uploads_bytes"] = report.upload.bytes
        if not ctx.dry_run:
            mark = time.monotonic()
            report.hooks = _after_sync(ctx, source, target, to_hosts)
            report.metrics["hooks_s"] = round(time.monotonic() - mark, 3)
    report.seconds = round(time.monotonic() - started, 3)
    ctx.outcome["details"] = dict(report.metrics)
    ctx.outcome["summary"] = report.render().splitlines()[0] + (
        f" ({report.database.total_changed} values rewritten)" if report.database else "")
    if not ctx.dry_run:
        ctx.runner.set_output("undo-id", report.undo_id or "")
        phases = "".join(f"| {k.removesuffix('_s')} | {v:.1f}s |\n"
                         for k, v in report.metrics.items() if k.endswith("_s"))
        ctx.runner.summary(f"### forge-ci sync: {source.name} → {target.name}\n\n"
                           f"```\n{report.render()}\n```\n"
                           + (f"\n| phase | took |\n|---|---|\n{phases}" if phases else ""))
    ctx.emit(report.as_dict(), report.render())
    return 0


def _req(host: Host | None) -> Host:
    assert host is not None
    return host


def _undo_command(ctx: Context, target: _Env, sid: str) -> str:
    config = getattr(ctx.args, "config", None)
    parts = ["forge-ci", "sync-undo", target.name, sid]
    if config:
        parts.append(f"--config={sh(config)}")
    if target.config.is_protected(target.name):
        parts.append(f"--confirm={target.name}")
    return " ".join(parts)


def _after_sync(ctx: Context, source: _Env, target: _Env, hosts: list[Host]) -> int:
    commands = target.config.hooks.after_sync
    if not commands:
        return 0
    current = Layout(target.root).current
    env = "".join(f"export {k}={sh(v)}\n" for k, v in
                  {"FORGE_ENVIRONMENT": target.name, "FORGE_SYNC_FROM": source.name,
                   "FORGE_PATH": target.root}.items())
    with ctx.runner.group(f"after_sync hooks on {target.name}"):
        for h in hosts:
            for i, command in enumerate(commands):
                ctx.runner.log(f"{h.name}: after_sync[{i}]: {command}")
                r = h.run(f"{env}cd {sh(current)} || exit 1\n{command}\n", check=False,
                          timeout=900)
                for line in (r.stdout + r.stderr).decode(errors="replace").splitlines()[-20:]:
                    ctx.runner.log(f"    {line}")
                if r.status != 0:
                    raise SyncError(f"{h.name}: hook after_sync[{i}] failed with exit "
                                    f"{r.status}", hint="the data is synced; fix the hook "
                                    "and run it by hand")
    return len(commands) * len(hosts)


def cmd_undo(ctx: Context) -> int:
    loaded = ctx.config()
    name = ctx.args.environment
    config = loaded.environment(name)
    target = _Env(name, config, target_root(config, loaded.root), loaded)
    _confirm(target, ctx.args.confirm, dry_run=False)
    db = target.db()
    with _connected(config, ctx) as hosts, _locked(target, hosts, ctx, "sync-undo"):
        host = _db_host(target, hosts)
        with ctx.runner.group(f"restore {name}'s database from sync snapshot"):
            path = database.undo(host, db, target.root, ctx.args.snapshot_id)
    ctx.emit({"environment": name, "snapshot": ctx.args.snapshot_id, "file": path},
             f"{name}: database restored from {path} on {host.name}")
    return 0
