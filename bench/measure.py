"""How every bench measures one command: wall time, CPU and peak resident size.

The peak comes from GNU time (Debian's ``time`` package), not from this script's own
``wait4``: a child started by ``posix_spawn`` or ``subprocess`` shares this script's
address space until it execs (vfork), and Linux carries that address space's peak into
the child's ``ru_maxrss``. A bench script that has imported the lab (boto3, moto's
client) is 60-75 MiB, so every command it spawned reported at least that much - a floor
that was this script, not the command. GNU time forks from its own small process, so its
child's peak is the command's own (and of what the command waited for).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

GNU_TIME = "/usr/bin/time"


def spawn(argv: list[str], env: dict[str, str], *, stdin: str | None = None,
          cwd: str | None = None, stderr: int | None = None) -> tuple[float, float, float]:
    """Run ``argv`` to completion: (wall seconds, CPU seconds, peak RSS MiB).

    Standard output goes to /dev/null, standard error too unless ``stderr`` (a file
    descriptor) is given; ``stdin`` is a path to read from. Fails with the exit code."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} is missing: install GNU time (Debian: apt-get install "
                         "time) - the benches take peak memory from it")
    path = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    fd, report = tempfile.mkstemp(prefix="forge-bench-time-")
    os.close(fd)
    try:
        with open(stdin or os.devnull, "rb") as given:
            start = time.perf_counter()
            # GNU time's own ru_maxrss is this script's (see above); the one it reports is
            # its child's, forked from GNU time itself.
            proc = subprocess.Popen(
                [GNU_TIME, "-q", "-f", "%M", "-o", report, path, *argv[1:]], env=env,
                cwd=cwd, stdin=given, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if stderr is None else stderr)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[:3]} failed with {proc.returncode}")
        with open(report) as f:
            peak_kib = int(f.read().split()[-1])
    finally:
        os.unlink(report)
    # CPU: the rusage of GNU time and its child (time's own is about a millisecond).
    return elapsed, usage.ru_utime + usage.ru_stime, peak_kib / 1024
