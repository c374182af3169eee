"""Run one forge action step: make sure forge-ci is installed, then hand over to it.

Usage (from an action's step; stdlib only, run with ``python3 -I -S``)::

    python3 -I -S "$GITHUB_ACTION_PATH/../_setup/run.py" deploy

forge-ci is installed from this action's own checkout (two folders up), never from
an index by name: first the hash-locked runtime dependencies
(``requirements/runtime.lock``), then the build backend (``build.lock`` beside this
file, also hash-locked), then the checkout itself with ``--no-deps``. The virtualenv
lives under ``${RUNNER_TOOL_CACHE:-~/.cache}/forge-ci/<version>-<key>``, where the key
hashes the locks, every file of the package and the interpreter. When a venv with
that key is already complete (its stamp file exists) nothing is installed: the warm
path is one hash of the source tree and an ``exec``.

Environment: ``FORGE_CI_CACHE`` overrides the cache folder (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STAMP = ".forge-ready"
# What decides the venv's contents; a change to any of them means a new venv.
KEY_FILES = ("requirements/runtime.lock", "actions/_setup/build.lock", "pyproject.toml")


def _iter_package(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root / "forge_ci"):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                yield Path(dirpath, name)


def cache_key(root: Path = ROOT) -> str:
    """sha256 over the locks, the package's files and the interpreter, as hex."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{os.path.realpath(sys.executable)}\0".encode())
    files = [root / f for f in KEY_FILES] + list(_iter_package(root))
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def version(root: Path = ROOT) -> str:
    for line in (root / "forge_ci" / "__init__.py").read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "0"


def cache_dir(env: dict[str, str]) -> Path:
    base = env.get("FORGE_CI_CACHE")
    if base:
        return Path(base)
    tool_cache = env.get("RUNNER_TOOL_CACHE")
    return Path(tool_cache if tool_cache else Path.home() / ".cache") / "forge-ci"


def venv_path(env: dict[str, str], root: Path = ROOT) -> Path:
    py = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    return cache_dir(env) / f"{version(root)}-{py}-{cache_key(root)[:32]}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


@contextlib.contextmanager
def _group(title: str) -> Iterator[None]:
    print(f"::group::{title}" if _in_actions() else f"== {title}", flush=True)
    try:
        yield
    finally:
        if _in_actions():
            print("::endgroup::", flush=True)


def _error(message: str) -> None:
    line = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    print(f"::error title=forge setup::{line}" if _in_actions() else f"error: {message}",
          flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two jobs on one self-hosted runner may build the same venv at once.
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pip(venv: Path, *args: str) -> None:
    cmd = [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", *args]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def _source_copy(root: Path, dest: Path) -> Path:
    """Copy what setuptools needs, so building leaves the action's checkout untouched."""
    src = dest / "src"
    src.mkdir()
    shutil.copy2(root / "pyproject.toml", src / "pyproject.toml")
    readme = root / "README.md"
    if readme.exists():
        shutil.copy2(readme, src / "README.md")
    else:
        (src / "README.md").write_text("forge-ci\n", encoding="utf-8")
    shutil.copytree(root / "forge_ci", src / "forge_ci",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def install(venv: Path, root: Path = ROOT) -> float:
    """Build the venv at ``venv`` (replacing any partial one); return the seconds taken."""
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                   stdin=subprocess.DEVNULL)
    _pip(venv, "--require-hashes", "-r", str(root / "requirements" / "runtime.lock"))
    build_lock = root / "actions" / "_setup" / "build.lock"
    _pip(venv, "--require-hashes", "--no-deps", "-r", str(build_lock))
    with tempfile.TemporaryDirectory(prefix="forge-src-") as tmp:
        src = _source_copy(root, Path(tmp))
        _pip(venv, "--no-deps", "--no-build-isolation", "--no-index", str(src))
    seconds = time.monotonic() - started
    stamp = {"version": version(root), "key": venv.name, "python": sys.version,
             "seconds": round(seconds, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())}
    (venv / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return seconds


def ensure(env: dict[str, str], root: Path = ROOT) -> Path:
    """Return a complete venv for this checkout, installing it first if needed."""
    venv = venv_path(env, root)
    if (venv / STAMP).is_file() and _python(venv).exists():
        return venv
    with _locked(venv.with_name(venv.name + ".lock")):
        if (venv / STAMP).is_file() and _python(venv).exists():
            return venv  # another job finished it while we waited
        with _group(f"Install forge-ci {version(root)} (first run with this lock)"):
            try:
                seconds = install(venv, root)
            except (OSError, subprocess.CalledProcessError) as e:
                shutil.rmtree(venv, ignore_errors=True)
                _error(f"could not install forge-ci from {root}: {e}. Python >= 3.11 with "
                       "venv is needed on the runner (set FORGE_PYTHON to choose one).")
                raise SystemExit(1) from None
            print(f"installed into {venv} in {seconds:.1f}s", flush=True)
    return venv


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: run.py ACTION | --ensure", file=sys.stderr)
        return 2
    # This script may be started by an older python3 than forge supports: say so.
    if sys.version_info < (3, 11):  # noqa: UP036
        _error(f"forge-ci needs Python >= 3.11; {sys.executable} is "
               f"{sys.version.split()[0]} (use actions/setup-python or set FORGE_PYTHON)")
        return 1
    venv = ensure(dict(os.environ))
    if argv[0] == "--ensure":
        print(venv)
        return 0
    py = str(_python(venv))
    # -I: the workspace (cwd) must not shadow the installed package, nor PYTHON* vars.
    os.execv(py, [py, "-I", "-m", "forge_ci.actions", argv[0]])  # noqa: S606 - no shell wanted
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
