"""forge-ci backup/restore against `restic` on the same data and the same S3 endpoint.

    .venv/bin/python bench/bench_backup.py [--files 900] [--big-mib 128] [--db-mib 40]
                                           [--size 1g] [--file-kb 20-400] [--repeat 3]

``--size`` (``1g``, ``10g``, ``500m``) sets the whole tree's size: the images as
given, the videos filling the rest (instead of ``--big-mib``). A media library of
many small files: ``--files 50000 --file-kb 2-40 --big-mib 0``.

One moto S3 server (the lab's), two buckets, and the lab's MariaDB with a database of
``--db-mib`` of rows. The data is an uploads-like tree: many small images (random
bytes), a few text files, some big videos. Both tools back up the tree and the
database from scratch, then again after one file was added, then restore the tree.
forge dumps the database itself (``mariadb-dump`` in its backup); restic gets the same
dump piped in (``mariadb-dump | restic backup --stdin``, its documented way), and its
two commands' times and CPU are added up (peak RSS: the larger). Each run is a
separate process run under GNU time (``bench/measure.py``), so wall time, CPU time and
peak RSS are measured the same way for both; each side starts after ``sync`` (nothing
of the other side's left to write back). Each round uses new
buckets and alternates which tool goes first (this machine's load drifts); the table
shows medians over the rounds and the ratio forge/restic (below 1.0: forge is faster
or smaller). forge runs with the local target (no SSH) so both read the same files.
moto spools every object above 1 MiB to a temporary file (both stores live on disk,
not in moto's memory: ``--size 10g`` needs about 40 GiB free), and each round deletes
both restored trees as soon as they are measured.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import measure  # bench/, beside this script
from lab.mariadb import Database, MariaDB, start_mariadb
from lab.s3 import start_s3

from forge_ci.backup.format.keys import generate_identity


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_tree(root: Path, files: int, big_mib: int, seed: int = 1,
              file_kb: tuple[int, int] = (20, 400), size: int | None = None) -> int:
    rng = random.Random(seed)
    up = root / "shared" / "web" / "app" / "uploads"
    total = 0
    for i in range(files):
        d = up / f"{2020 + i % 5}" / f"{1 + i % 12:02d}"
        d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(file_kb[0] * 1000, file_kb[1] * 1000)
        (d / f"image-{i:04d}.jpg").write_bytes(os.urandom(n))
        total += n
    for i in range(20):
        text = (f"<p>post {i} " + "lorem ipsum dolor sit amet " * 2000).encode()
        (up / f"export-{i}.html").write_bytes(text)
        total += len(text)
    if size is not None:
        big_mib = max(size - total, 0) >> 20
    for i in range(2):
        with (up / f"video-{i}.mp4").open("wb") as f:
            for _ in range(big_mib // 2):
                f.write(os.urandom(1 << 20))
        total += (big_mib // 2) << 20
    return total


def fill_database(server: MariaDB, mib: int) -> Database:
    """Posts of text (half random words, half repeated: it compresses like a blog)."""
    db = server.create_database("bench")
    server.sql("CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200),"
               " body LONGTEXT) ENGINE=InnoDB;", db.name)
    rng = random.Random(2)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]
    row = 20_000
    rows = 0
    while rows * row < mib << 20:
        values = []
        for _ in range(100):
            text = " ".join(rng.choice(words) for _ in range(row // 12))
            values.append(f"('post {rows}', '{text} {'lorem ipsum ' * (row // 24)}')")
            rows += 1
        server.sql("INSERT INTO posts (title, body) VALUES " + ",".join(values) + ";", db.name)
    return db


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run to completion; (seconds, CPU seconds, peak RSS MiB). Output: /dev/null."""
    return measure.spawn(argv, env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=900)
    parser.add_argument("--big-mib", type=int, default=128)
    parser.add_argument("--db-mib", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=parse_size, default=None,
                        help="whole tree size (1g, 10g): videos fill what the images leave")
    parser.add_argument("--file-kb", default="20-400", help="image sizes, LO-HI in kB")
    args = parser.parse_args()
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed")
    server = start_s3(spool_bytes=1 << 20)  # both stores on disk, not in moto's memory
    mariadb = start_mariadb()
    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        site = tmp / "site"
        lo, _, hi = args.file_kb.partition("-")
        total = make_tree(site, args.files, args.big_mib, file_kb=(int(lo), int(hi or lo)),
                          size=args.size)
        db = fill_database(mariadb, args.db_mib)
        print(f"data: {args.files + 22} files, {total / 2**20:.0f} MiB, a database of "
              f"~{args.db_mib} MiB (S3: moto on loopback), {args.repeat} rounds, medians; "
              f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        rounds = [run(server, db, tmp / f"round-{i}", site, forge_first=i % 2 == 0)
                  for i in range(args.repeat)]
        report(rounds)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        server.close()
        mariadb.close()
        shutil.rmtree(tmp, ignore_errors=True)


Measure = tuple[float, float, float, float]  # wall s, CPU s, peak MiB, moto's CPU s
STEPS = ("backup (first)", "backup (+1 file)", "restore (drill)")


def run(server: object, db: Database, tmp: Path, site: Path, *,
        forge_first: bool) -> list[tuple[Measure, Measure]]:
    tmp.mkdir()
    uploads = site / "shared" / "web" / "app" / "uploads"
    (uploads / "new-upload.jpg").unlink(missing_ok=True)
    shutil.rmtree(site / ".forge", ignore_errors=True)  # forge's hash cache: a first backup
    forge_bucket = server.create_bucket()  # type: ignore[attr-defined]
    restic_bucket = server.create_bucket()  # type: ignore[attr-defined]
    identity = generate_identity()
    (tmp / "forge.yml").write_text(
        "version: 1\nproject: bench\nenvironments:\n  production:\n"
        f"    path: {site}\n    backup:\n      store: s3://{forge_bucket}/forge\n"
        f"      database: {{ name: {db.name}, user: {db.user}, password: \"${{DB_PASSWORD}}\","
        f" host: 127.0.0.1, port: {db.port} }}\n")
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp), **server.env()}  # type: ignore[attr-defined]
    forge_env = {**base, "FORGE_BACKUP_RECIPIENT": str(identity.recipient),
                 "FORGE_BACKUP_IDENTITY": identity.to_secret().reveal(),
                 "DB_PASSWORD": db.password}
    restic_env = {**base, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(tmp / "cache"),
                  "RESTIC_REPOSITORY": f"s3:{server.endpoint_url}/{restic_bucket}/restic"}  # type: ignore[attr-defined]
    forge = [sys.executable, "-m", "forge_ci", "--config", str(tmp / "forge.yml")]
    restic = ["restic", "--no-cache"]
    spawn([*restic, "init"], restic_env)
    backup_ours = [[*forge, "backup", "production"]]
    dump = (f"MYSQL_PWD=$DB_PASSWORD mariadb-dump --single-transaction --quick -h 127.0.0.1 "
            f"-P {db.port} -u {db.user} {db.name} | restic --no-cache backup -q --stdin "
            "--stdin-filename dump.sql")
    backup_theirs = [[*restic, "backup", "-q", str(uploads)],
                     ["bash", "-c", f"set -o pipefail; {dump}"]]
    restic_env["DB_PASSWORD"] = db.password
    steps = [
        (backup_ours, backup_theirs),
        (backup_ours, backup_theirs),
        ([[*forge, "restore", "production", "--only", "files", "--to-dir",
           str(tmp / "forge-restore")]],
         [[*restic, "restore", "latest", "--path", str(uploads), "--target",
           str(tmp / "restic-restore")]]),
    ]
    out = []
    for i, (ours, theirs) in enumerate(steps):
        if i == 1:
            (uploads / "new-upload.jpg").write_bytes(os.urandom(300_000))
        moto = server._proc.pid  # type: ignore[attr-defined]
        if forge_first:
            f, r = spawn_all(ours, forge_env, moto), spawn_all(theirs, restic_env, moto)
        else:
            r, f = spawn_all(theirs, restic_env, moto), spawn_all(ours, forge_env, moto)
        out.append((f, r))
        for restored in ("forge-restore", "restic-restore"):  # two copies of 10 GiB: disk
            shutil.rmtree(tmp / restored, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def spawn_all(commands: list[list[str]], env: dict[str, str], server: int) -> Measure:
    """Run one after the other: summed seconds and CPU, the largest peak RSS, and the
    CPU the S3 server (pid ``server``) spent meanwhile (moto is one Python process:
    its cost per request can be what a run waits for)."""
    # Each side starts with nothing left to write back: the other's restore (10 GiB
    # at --size 10g) would otherwise be written to disk while this one runs.
    os.sync()
    before = _cpu_of(server)
    done = [spawn(argv, env) for argv in commands]
    return (sum(d[0] for d in done), sum(d[1] for d in done), max(d[2] for d in done),
            _cpu_of(server) - before)


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(rounds: list[list[tuple[Measure, Measure]]]) -> None:
    print(f"{'step':18} {'forge s':>8} {'restic s':>9} {'ratio':>6}   {'forge cpu':>9} "
          f"{'restic cpu':>10}   {'forge MiB':>9} {'restic MiB':>10} {'ratio':>6}   "
          f"{'moto cpu (forge / restic)':>25}")
    for i, name in enumerate(STEPS):
        f = [statistics.median(r[i][0][k] for r in rounds) for k in range(4)]
        t = [statistics.median(r[i][1][k] for r in rounds) for k in range(4)]
        walls = ", ".join(f"{r[i][0][0] / r[i][1][0]:.2f}" for r in rounds)
        print(f"{name:18} {f[0]:8.2f} {t[0]:9.2f} {f[0] / t[0]:6.2f}   {f[1]:9.2f} {t[1]:10.2f}"
              f"   {f[2]:9.0f} {t[2]:10.0f} {f[2] / t[2]:6.2f}   {f[3]:11.2f} / {t[3]:<11.2f}"
              f"   (rounds: {walls})")


if __name__ == "__main__":
    main()
