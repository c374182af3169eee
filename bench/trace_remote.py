"""Run a forge-ci command and log every remote round trip with its time (a profile).

    FORGE_TRACE_OUT=/tmp/trace.txt .venv/bin/python bench/trace_remote.py deploy production ...

Each SSH channel forge opens (one command or one stream) is one round trip; the
trace lists them in order with the wall time from open to close and the first
line of the script, then a total. The command itself runs unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from forge_ci.remote import ssh


def _since_exec() -> float:
    """Seconds since this process started (kernel's start time, 10 ms ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start


def main() -> None:
    exec_to_here = _since_exec()
    out = open(os.environ.get("FORGE_TRACE_OUT", "/dev/stderr"), "a")  # noqa: SIM115
    started = time.perf_counter()
    rows: list[tuple[float, float, str]] = []
    channel = ssh.SshHost._channel
    run = ssh.SshHost.run

    def traced_channel(self: ssh.SshHost, script: str) -> Any:
        rows.append((time.perf_counter() - started, 0.0, script.strip().splitlines()[0][:90]
                     if script.strip() else "(empty)"))
        return channel(self, script)

    def traced_run(self: ssh.SshHost, script: str, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return run(self, script, **kw)
        finally:
            at, _, first = rows[-1]
            rows[-1] = (at, time.perf_counter() - t, first)

    ssh.SshHost._channel = traced_channel  # type: ignore[method-assign]
    ssh.SshHost.run = traced_run  # type: ignore[method-assign]
    from forge_ci.cli import main as cli_main

    imported = time.perf_counter() - started

    try:
        cli_main(sys.argv[1:])
    finally:
        for at, took, first in rows:
            out.write(f"{at:7.3f}s {took * 1000:7.1f}ms  {first}\n")
        out.write(f"{len(rows)} channels; exec to trace start {exec_to_here:.3f}s, "
                  f"forge_ci.cli imported at {imported:.3f}s, "
                  f"total {time.perf_counter() - started:.3f}s\n")
        out.close()


if __name__ == "__main__":
    main()
