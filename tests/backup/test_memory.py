"""Memory stays flat: a backup of a big file and a big dump costs no more RSS than a
small one (measured in a child process running the real command)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import Site

# VmHWM, not ru_maxrss: the latter carries over the RSS of the forked parent (pytest).
PROBE = (
    "import sys\n"
    "from forge_ci.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "print('maxrss', hwm.split()[1], file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _peak_kib(site: Site) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, "backup", "--config", str(site.config),
                           "production"], env=site.environ(read=False), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("maxrss", 1)[1].split()[0])


def test_peak_memory_does_not_grow_with_data(make_site) -> None:  # type: ignore[no-untyped-def]
    site: Site = make_site(store="file", big=100_000)
    small = _peak_kib(site)
    with (site.uploads / "video.mp4").open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    # 32 MiB of rows: the dump streams row by row (--quick) and through zstd.
    site.server.sql("CREATE TABLE bulk (id INT PRIMARY KEY, v LONGTEXT);"
                    "INSERT INTO bulk SELECT seq, REPEAT(MD5(seq), 32768) "
                    "FROM seq_1_to_32;", site.db.name)
    large = _peak_kib(site)
    assert large - small < 32 * 1024, f"peak RSS grew from {small} KiB to {large} KiB"
