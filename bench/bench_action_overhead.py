"""What forge's composite actions cost on top of forge-ci itself.

    .venv/bin/python bench/bench_action_overhead.py [--runs N] [--cold-runs N]
                                                    [--no-cold] [--no-pip] [--no-cache]

Measures, with this checkout as the action's checkout:

- cold, uv (what the actions do): ``run.py --ensure`` as on a fresh machine — an
  empty HOME, XDG_CACHE_HOME, PIP_CACHE_DIR and UV_CACHE_DIR, no pip configuration
  and no local wheel folders (PIP_FIND_LINKS, index overrides), so every artifact
  comes from PyPI as on a GitHub-hosted runner: pip installs uv from
  ``actions/_setup/installer.lock``, uv makes the venv from requirements/runtime.lock
  and build.lock, forge is built from the checkout. Then the first action step after
  it (bytecode is written on that first start, as uv does not compile it);
- cold, pip (``FORGE_CI_INSTALLER=pip``, the fallback and the old way): the same with
  pip into a venv of its own, bytecode compiled at install;
- cache (option b, an ``actions/cache`` step keyed on the locks): the uv-made venv
  archived as that action does (tar + zstd), then timed: extracting it into an empty
  cache folder at the same path plus the warm check. The download and the cache
  action's own start are not measured here (no cache service): add them, from the
  printed archive size and the runner's bandwidth;
- warm check: ``run.py --ensure`` when the venv for this lock and source exists (hash
  the locks and the package, find the stamp): the whole cost before forge starts;
- warm step: what an action step runs — ``run.py deploy``, which execs
  ``python -I -m forge_ci.actions deploy`` — stopped at input validation (an invalid
  environment name), so forge's own work is not counted;
- reference: ``python -I -c "import forge_ci.cli"`` in the same venv — what starting
  forge-ci costs before it parses its arguments — so step minus reference is what the
  action adds in front of forge-ci (the installer's check, a second interpreter start,
  input validation).

Cold figures are each run's (median printed too); warm figures are medians over
``--runs`` in one process.
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
# Settings that would let pip or uv read a local mirror, wheel folder or cache.
NOT_ON_A_FRESH_RUNNER = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                         "PIP_NO_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX",
                         "UV_DEFAULT_INDEX", "UV_FIND_LINKS", "UV_NO_INDEX", "UV_OFFLINE")


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


def fresh_env(base: dict[str, str], home: Path, cache: Path) -> dict[str, str]:
    """``base`` as on a new runner: empty HOME and download caches, PyPI only."""
    env = {k: v for k, v in base.items() if k not in NOT_ON_A_FRESH_RUNNER}
    env.update({"HOME": str(home / "home"), "XDG_CACHE_HOME": str(home / "xdg"),
                "PIP_CACHE_DIR": str(home / "pip-cache"), "UV_CACHE_DIR": str(home / "uv-cache"),
                "PIP_CONFIG_FILE": os.devnull, "FORGE_CI_CACHE": str(cache)})
    return env


def _cold(py: str, base: dict[str, str], tmp: Path, installer: str, runs: int,
          label: str) -> tuple[list[float], float, Path, Path]:
    """Cold installs in fresh homes: (each run's seconds, first step, venv, its cache)."""
    times: list[float] = []
    first = 0.0
    venv = cache = Path()
    for i in range(runs):
        home = tmp / f"{installer}-{i}"
        cache = home / "forge-cache"
        env = {**fresh_env(base, home, cache), "FORGE_CI_INSTALLER": installer}
        times.append(_time([py, "-I", "-S", str(RUN_PY), "--ensure"], env))
        venv = Path(subprocess.run([py, "-I", "-S", str(RUN_PY), "--ensure"], env=env,
                                   capture_output=True, text=True, check=True).stdout.strip())
        if i == 0:
            first = _time([py, "-I", "-S", str(RUN_PY), "deploy"],
                          {**env, "INPUT_ENVIRONMENT": "not a name"}, ok=(2,))
        if i + 1 < runs:
            shutil.rmtree(home, ignore_errors=True)
    each = ", ".join(f"{t:.1f}" for t in times)
    print(f"cold install, {label + ':':<38}{statistics.median(times):7.1f} s "
          f"(runs: {each})")
    print(f"  then the first action step (bytecode):     {first * 1000:7.1f} ms")
    return times, first, venv, cache


def _cache_restore(py: str, venv: Path, cache: Path, env: dict[str, str]) -> None:
    """Option b: archive the venv as actions/cache does, time extract + warm check."""
    zstd = shutil.which("zstd")
    compress = [zstd, "-T0", "--long=30"] if zstd else ["gzip"]
    archive = cache.parent / ("cache.tzst" if zstd else "cache.tgz")
    with open(archive, "wb") as out:
        tar = subprocess.Popen(["tar", "--posix", "-cf", "-", "-P", "-C", str(cache),
                                venv.name], stdout=subprocess.PIPE)
        subprocess.run(compress, stdin=tar.stdout, stdout=out, check=True)
        if tar.wait() != 0:
            raise SystemExit("tar failed")
    shutil.rmtree(cache)
    decompress = f"{zstd} -d --long=30" if zstd else "gzip -d"
    cache.mkdir()
    extract = _time(["tar", "-xf", str(archive), "-P", "-C", str(cache),
                     "--use-compress-program", decompress], env)
    check = _time([py, "-I", "-S", str(RUN_PY), "--ensure"], env)
    size = archive.stat().st_size / 1e6
    print(f"cache restore (b), extract {size:5.1f} MB archive: {extract:7.2f} s")
    print(f"  + first warm check after it:              {check * 1000:7.1f} ms "
          "(+ download and the cache action's start, not measured here)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="warm runs (median)")
    ap.add_argument("--cold-runs", type=int, default=1, help="cold installs per installer")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold installs")
    ap.add_argument("--no-pip", action="store_true", help="skip the cold install with pip")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache-restore figure")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    base = dict(os.environ)
    for k in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "FORGE_CI_CACHE",
              "FORGE_CI_INSTALLER"):
        base.pop(k, None)
    py = _python()
    try:
        if args.no_cold:
            cache = tmp / "warm" / "forge-cache"
            env = {**base, "FORGE_CI_CACHE": str(cache)}
            ensure = [py, "-I", "-S", str(RUN_PY), "--ensure"]
            _time(ensure, env)  # installs if needed; the next call prints only the path
            venv = Path(subprocess.run(ensure, env=env, capture_output=True, text=True,
                                       check=True).stdout.strip())
        else:
            _, _, venv, cache = _cold(py, base, tmp, "uv", args.cold_runs,
                                      "uv (installer.lock)")
            env = fresh_env(base, cache.parent, cache)
            if not args.no_pip:
                _cold(py, base, tmp, "pip", args.cold_runs, "pip (FORGE_CI_INSTALLER=pip)")
            if not args.no_cache:
                _cache_restore(py, venv, cache, env)
        ensure = [py, "-I", "-S", str(RUN_PY), "--ensure"]
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
