"""A restore drill: prove the newest snapshot can be put back, then throw the copy away.

On the environment's backup host, :func:`run_drill`

1. restores the snapshot's database into a scratch database (``drill.database``,
   default ``<database>_drill``, dropped first so an old drill's tables cannot pass
   for this one's) and its files into ``<drill.dir>/forge-drill-<snapshot id>``
   (``drill.dir`` defaults to ``<path>/.forge/drill``), through the ordinary restore
   (:mod:`forge_ci.backup.restore`: every byte authenticated before it is used);
2. checks the copy: the scratch database has tables, a WordPress ``*options`` table
   and rows in all (the snapshot records no row counts, so "more than none"); the
   files restored are the snapshot's count; ``drill.url``, when set, answers 200
   (a site the operator points at the scratch copy);
3. always drops the scratch database and removes the scratch directory, whatever
   happened.

A problem found is a :class:`DrillFailed` raised *after* the report is complete,
so the caller prints the report and the error (and the CLI sends ``drill.failed``).
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from forge_ci.backup.dump import check_database_name, option_file
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.config.backup import BackupConfig, DatabaseConfig
from forge_ci.config.watch import DrillConfig
from forge_ci.errors import ForgeError
from forge_ci.remote.base import Host, sh

Log = Callable[[str], None]
_PLAIN = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


class DrillFailed(ForgeError):
    """The drill could not restore the snapshot, or the copy failed its checks."""


@dataclass
class DrillReport:
    snapshot: str
    database: str | None
    directory: str
    ok: bool = False
    tables: int = 0
    rows: int = 0
    files: int = 0
    url_status: int | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def scratch_names(cfg: BackupConfig, drill: DrillConfig, root: str,
                  snapshot: str) -> tuple[str | None, str]:
    database = None
    if cfg.database is not None:
        database = drill.database or (cfg.database.name[:58] + "_drill")
    base = drill.dir or posixpath.join(root, ".forge", "drill")
    return database, posixpath.join(base, f"forge-drill-{snapshot}")


def run_drill(repo: Repository, host: Host, cfg: BackupConfig, drill: DrillConfig,
              root: str, *, log: Log = lambda _m: None, timeout: float = 30.0) -> DrillReport:
    started = time.monotonic()
    loaded = repo.pick(None, warn=log)  # the newest snapshot a pinned signer vouches for
    ref, manifest = loaded.ref, loaded.manifest
    database, directory = scratch_names(cfg, drill, root, ref.id)
    report = DrillReport(ref.id, database if manifest.database else None, directory)
    try:
        _clean(host, cfg.database, database, directory)
        host.run(f"mkdir -p {sh(directory)}", timeout=60)
        plan = plan_restore(ref, manifest, cfg, root, to_dir=directory if manifest.files else None,
                            database=database if manifest.database else None)
        log(f"restoring {ref.id} into {database or '(no database)'} and {directory}")
        try:
            run_restore(plan, repo, host, cfg, yes=False, log=log)
        except ForgeError as e:
            report.problems.append(f"restore failed: {e.message}")
        else:
            _check(host, cfg.database, report, manifest_files=sum(
                1 for f in manifest.files if f.type == "file"))
            if drill.url:
                _check_url(drill.url, report, timeout)
    finally:
        try:
            _clean(host, cfg.database, database, directory)
        except ForgeError as e:
            report.problems.append(f"cleaning up the scratch copy failed: {e.message}")
    report.ok = not report.problems
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _check(host: Host, db: DatabaseConfig | None, report: DrillReport, *,
           manifest_files: int) -> None:
    found = host.run(f"find {sh(report.directory)} -type f | wc -l", check=False, timeout=300)
    report.files = int(found.text.strip() or 0) if found.status == 0 else 0
    if report.files < manifest_files:
        report.problems.append(f"{report.files} files restored, the snapshot has "
                               f"{manifest_files}")
    if db is None or report.database is None:
        return
    names = _sql(host, db, report.database,
                 "SELECT table_name FROM information_schema.tables "
                 "WHERE table_schema = DATABASE() ORDER BY table_name").split()
    report.tables = len(names)
    if not names:
        report.problems.append(f"database {report.database}: no tables after the import")
        return
    # Table names came from the server; only plain ones are quoted into SQL.
    plain = [n for n in names if _PLAIN.match(n)]
    counts = " UNION ALL ".join(
        f"SELECT '{n}', COUNT(*) FROM `{n}`" for n in plain)  # noqa: S608 - plain names
    rows = {}
    for line in _sql(host, db, report.database, counts).splitlines():
        name, _, count = line.partition("\t")
        rows[name] = int(count or 0)
    report.rows = sum(rows.values())
    options = [n for n in rows if n.endswith("options")]
    if not options:
        report.problems.append("no WordPress options table in the restored database")
    elif not any(rows[n] for n in options):
        report.problems.append(f"{options[0]} is empty: WordPress would not start")
    if report.rows == 0:
        report.problems.append("every restored table is empty")


def _check_url(url: str, report: DrillReport, timeout: float) -> None:
    import requests  # here: every backup verb imports this module, only a drill needs it

    try:
        r = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as e:
        report.problems.append(f"{url}: no answer ({type(e).__name__})")
        return
    report.url_status = r.status_code
    if r.status_code != 200:
        report.problems.append(f"{url} answered HTTP {r.status_code}")


def _sql(host: Host, db: DatabaseConfig, database: str, statement: str) -> str:
    """Run one statement in ``database`` on the host; tab-separated rows, no header."""
    script = ("tool=$(command -v mariadb || command -v mysql) || "
              "{ echo 'neither mariadb nor mysql (client) is installed' >&2; exit 127; }\n"
              f'exec "$tool" --defaults-extra-file=/dev/stdin -N -B -e {sh(statement)} '
              f"-- {sh(check_database_name(database))}")
    result = host.run(script, input=option_file(db), check=False, timeout=600)
    return host.check(result, f"a query in the drill database {database}").text


def _clean(host: Host, db: DatabaseConfig | None, database: str | None,
           directory: str) -> None:
    host.run(f"rm -rf -- {sh(directory)}", timeout=600)
    if db is None or database is None:
        return
    name = check_database_name(database)
    script = ("tool=$(command -v mariadb || command -v mysql) || exit 127\n"
              f'exec "$tool" --defaults-extra-file=/dev/stdin '
              f"-e {sh(f'DROP DATABASE IF EXISTS `{name}`')}")
    host.check(host.run(script, input=option_file(db), check=False, timeout=600),
               f"dropping the drill database {name}")
