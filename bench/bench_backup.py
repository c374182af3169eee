"""forge-ci backup/restore against `restic` on the same data and the same S3 endpoint.

    .venv/bin/python bench/bench_backup.py [--files 400] [--big-mib 64]

One moto S3 server (the lab's), two buckets. The data is an uploads-like tree: many
small images (random bytes), a few text files, some big videos. Both tools back it up
from scratch, then again after one file was added, then restore it. Each run is a
separate process started with posix_spawn and reaped with wait4, so wall time and peak
RSS (ru_maxrss) are measured the same way for both. Prints seconds, MiB, and the ratio
forge/restic (below 1.0: forge is faster or smaller). forge runs with the local target
(no SSH) so both read the same local files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab.s3 import start_s3

from forge_ci.backup.keys import generate_identity


def make_tree(root: Path, files: int, big_mib: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    up = root / "shared" / "web" / "app" / "uploads"
    total = 0
    for i in range(files):
        d = up / f"{2020 + i % 5}" / f"{1 + i % 12:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(20_000, 400_000)
        (d / f"image-{i:04d}.jpg").write_bytes(os.urandom(size))
        total += size
    for i in range(20):
        text = (f"<p>post {i} " + "lorem ipsum dolor sit amet " * 2000).encode()
        (up / f"export-{i}.html").write_bytes(text)
        total += len(text)
    for i in range(2):
        with (up / f"video-{i}.mp4").open("wb") as f:
            for _ in range(big_mib // 2):
                f.write(os.urandom(1 << 20))
        total += (big_mib // 2) << 20
    return total


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run to completion; (seconds, peak RSS MiB). Output goes to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    path = shutil.which(argv[0]) or argv[0]
    start = time.perf_counter()
    pid = os.posix_spawn(path, argv, env, file_actions=[
        (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed with {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--big-mib", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed")
    server = start_s3()
    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        run(server, tmp, args.files, args.big_mib)
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run(server: object, tmp: Path, files: int, big_mib: int) -> None:
    site = tmp / "site"
    total = make_tree(site, files, big_mib)
    uploads = site / "shared" / "web" / "app" / "uploads"
    forge_bucket = server.create_bucket()  # type: ignore[attr-defined]
    restic_bucket = server.create_bucket()  # type: ignore[attr-defined]
    identity = generate_identity()
    (tmp / "forge.yml").write_text(
        "version: 1\nproject: bench\nenvironments:\n  production:\n"
        f"    path: {site}\n    backup:\n      store: s3://{forge_bucket}/forge\n")
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp), **server.env()}  # type: ignore[attr-defined]
    forge_env = {**base, "FORGE_BACKUP_RECIPIENT": str(identity.recipient),
                 "FORGE_BACKUP_IDENTITY": identity.to_secret().reveal()}
    restic_env = {**base, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(tmp / "cache"),
                  "RESTIC_REPOSITORY": f"s3:{server.endpoint_url}/{restic_bucket}/restic"}  # type: ignore[attr-defined]
    forge = [sys.executable, "-m", "forge_ci", "--config", str(tmp / "forge.yml")]
    restic = ["restic", "--no-cache"]
    spawn([*restic, "init"], restic_env)

    print(f"data: {files + 22} files, {total / 2**20:.0f} MiB (S3: moto on loopback)")
    print(f"{'step':22} {'forge s':>8} {'restic s':>9} {'ratio':>6} {'forge MiB':>10} "
          f"{'restic MiB':>11} {'ratio':>6}")
    backup_ours = [*forge, "backup", "production"]
    backup_theirs = [*restic, "backup", "-q", str(uploads)]
    steps = [
        ("backup (first)", backup_ours, backup_theirs),
        ("backup (+1 file)", backup_ours, backup_theirs),
        ("restore (drill)", [*forge, "restore", "production", "--only", "files", "--to-dir",
                             str(tmp / "forge-restore")],
         [*restic, "restore", "latest", "--target", str(tmp / "restic-restore")]),
    ]
    for i, (name, ours, theirs) in enumerate(steps):
        if i == 1:
            (uploads / "new-upload.jpg").write_bytes(os.urandom(300_000))
        t_f, m_f = spawn(ours, forge_env)
        t_r, m_r = spawn(theirs, restic_env)
        print(f"{name:22} {t_f:8.2f} {t_r:9.2f} {t_f / t_r:6.2f} {m_f:10.0f} {m_r:11.0f} "
              f"{m_f / m_r:6.2f}")


if __name__ == "__main__":
    main()
