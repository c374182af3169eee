"""What forge's composite actions cost on top of forge-ci itself.

    .venv/bin/python bench/bench_action_overhead.py [--runs N] [--no-cold]

Measures, with this checkout as the action's checkout:

- cold: the first run on a runner — a venv made from requirements/runtime.lock and
  build.lock, forge installed from the checkout (pip's own download cache is used if
  present, as on a self-hosted runner; a hosted runner may be slower);
- warm check: ``run.py --ensure`` when the venv for this lock and source exists (hash
  the locks and the package, find the stamp): the whole cost before forge starts;
- warm step: what an action step runs — ``run.py deploy``, which execs
  ``python -I -m forge_ci.actions deploy`` — stopped at input validation (an invalid
  environment name), so forge's own work is not counted;
- reference: ``python -I -c "import forge_ci.cli"`` in the same venv — what starting
  forge-ci costs before it parses its arguments — so step minus reference is what the
  action adds in front of forge-ci (the installer's check, a second interpreter start,
  input validation).

Figures are medians over ``--runs`` in one process, printed with the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "actions" / "_setup" / "run.py"


def _python() -> str:
    for name in ("python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        p = Path(sys.base_prefix) / "bin" / name
        if p.exists():
            return str(p)
    return sys.executable


def _time(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if r.returncode not in ok:
        raise SystemExit(f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return seconds


def _median(cmd: list[str], env: dict[str, str], runs: int,
            ok: tuple[int, ...] = (0,)) -> float:
    _time(cmd, env, ok)  # one warm-up: page cache, bytecode
    return statistics.median(_time(cmd, env, ok) for _ in range(runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold install")
    ap.add_argument("--cache", type=Path, help="venv cache to use (default: a temp dir)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    cache = args.cache or tmp / "cache"
    env = {**os.environ, "FORGE_CI_CACHE": str(cache)}
    for k in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        env.pop(k, None)
    py = _python()
    ensure = [py, "-I", "-S", str(RUN_PY), "--ensure"]
    try:
        if not args.no_cold:
            shutil.rmtree(cache, ignore_errors=True)
            cold = _time(ensure, env)
            print(f"cold install (venv + runtime.lock + forge):  {cold:7.1f} s")
        else:
            _time(ensure, env)
        venv = Path(subprocess.run(ensure, env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())

        check = _median(ensure, env, args.runs)
        step_env = {**env, "INPUT_ENVIRONMENT": "not a name"}  # stops at validation
        step = _median([py, "-I", "-S", str(RUN_PY), "deploy"], step_env, args.runs, ok=(2,))
        ref = _median([str(venv / "bin" / "python"), "-I", "-c", "import forge_ci.cli"],
                      env, args.runs)
        print(f"warm check (hash locks + package, stamp):   {check * 1000:7.1f} ms")
        print(f"warm action step up to input validation:    {step * 1000:7.1f} ms")
        print(f"reference: forge-ci start (import cli):     {ref * 1000:7.1f} ms")
        print(f"overhead of the action over bare forge-ci:  {(step - ref) * 1000:7.1f} ms "
              f"(x{step / ref:.2f} of the reference; target: < 1000 ms)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
