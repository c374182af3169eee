"""Run one forge action step: make sure forge-ci is installed, then hand over to it.

Usage (from an action's step; stdlib only, run with ``python3 -I -S``)::

    python3 -I -S "$GITHUB_ACTION_PATH/../_setup/run.py" deploy

forge-ci is installed from this action's own checkout (two folders up), never from
an index by name: first the hash-locked runtime dependencies
(``requirements/runtime.lock``), then the checkout itself with ``--no-deps``, built by
the build backend from ``build.lock`` beside this file (also hash-locked). The virtualenv
lives under ``${RUNNER_TOOL_CACHE:-~/.cache}/forge-ci/<version>-<key>``, where the key
hashes the locks, every file of the package and the interpreter. When a venv with
that key is already complete (its stamp file exists) nothing is installed: the warm
path is one hash of the source tree and an ``exec``.

The cold install uses uv, itself hash-locked (``installer.lock`` beside this file,
PyPI wheels only): the interpreter's pip (or, without one, the pip wheel bundled with
its ``ensurepip``) puts it under ``<cache>/uv-<lock hash>`` once, then uv makes the
venv's contents with ``--require-hashes``, downloading in parallel and skipping
bytecode compilation (Python writes the bytecode of what forge imports on its first
start), while setuptools, put in a folder of its own, builds forge's wheel. Where uv
cannot be had or fails (no wheel for the platform, say), pip does the same install
into a venv of its own, as slowly as before.

Environment: ``FORGE_CI_CACHE`` overrides the cache folder (tests, benchmarks);
``FORGE_CI_INSTALLER=pip`` skips uv (a runner that must not run it; benchmarks).
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
KEY_FILES = ("requirements/runtime.lock", "actions/_setup/build.lock",
             "actions/_setup/installer.lock", "pyproject.toml")
INSTALLER_LOCK = "actions/_setup/installer.lock"
INSTALLERS = ("uv", "pip")


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


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run one install command (stdin closed: nothing may wait for an answer), timed."""
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    what = " ".join([Path(cmd[0]).name, *(a for a in cmd[1:4] if not a.startswith("-"))])
    print(f"({time.monotonic() - started:.1f}s: {what})", flush=True)


def _pip(venv: Path, *args: str) -> None:
    _run([str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
          "--no-input", "--progress-bar", "off", *args])


def _bundled_pip() -> list[str]:
    """pip run from the wheel bundled with ``ensurepip``, as ensurepip itself runs it."""
    import ensurepip  # stdlib
    import sysconfig

    # Its own folder, or where a distribution keeps it (Debian: WHEEL_PKG_DIR).
    folders = [Path(ensurepip.__file__).parent / "_bundled"]
    if sysconfig.get_config_var("WHEEL_PKG_DIR"):
        folders.append(Path(sysconfig.get_config_var("WHEEL_PKG_DIR")))
    bundled = sorted(w for folder in folders for w in folder.glob("pip-*.whl"))
    if not bundled:
        raise FileNotFoundError("no pip: neither installed nor bundled with ensurepip")
    code = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('pip', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-I", "-c", code, str(bundled[-1])]


def _pip_command() -> list[str]:
    """How to run pip with this interpreter: its own pip, else ensurepip's bundled wheel.

    ``-I`` keeps the workspace (the current directory) off ``sys.path``.
    """
    probe = subprocess.run([sys.executable, "-I", "-c", "import pip"], check=False,
                           stdin=subprocess.DEVNULL, capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-I", "-m", "pip"]
    return _bundled_pip()


def uv_home(cache: Path, root: Path = ROOT) -> Path:
    """Where uv from ``installer.lock`` lives: one folder per lock, beside the venvs."""
    digest = hashlib.sha256((root / INSTALLER_LOCK).read_bytes()).hexdigest()
    return cache / f"uv-{digest[:16]}"


def installer(cache: Path, root: Path = ROOT) -> Path | None:
    """uv from the hash-locked ``installer.lock``, installed once; None if it cannot be had."""
    home = uv_home(cache, root)
    uv = home / "bin" / "uv"
    if (home / STAMP).is_file() and uv.exists():
        return uv
    with _locked(home.with_name(home.name + ".lock")):
        if (home / STAMP).is_file() and uv.exists():
            return uv
        shutil.rmtree(home, ignore_errors=True)
        try:
            _run([*_pip_command(), "install", "--disable-pip-version-check", "--no-input",
                  "--progress-bar", "off", "--no-cache-dir", "--require-hashes", "--no-deps",
                  "--only-binary", ":all:", "--target", str(home),
                  "-r", str(root / INSTALLER_LOCK)])
            _run([str(uv), "--version"])
        except (OSError, subprocess.CalledProcessError) as e:
            shutil.rmtree(home, ignore_errors=True)
            print(f"uv from {INSTALLER_LOCK} is not available here ({e}); using pip",
                  flush=True)
            return None
        (home / STAMP).write_text(json.dumps({"lock": home.name}) + "\n", encoding="utf-8")
    return uv


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


# Builds forge's wheel with setuptools from a folder of its own (-S: no site-packages),
# so the build can run while uv fills the venv.
_BUILD_WHEEL = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from setuptools import build_meta; build_meta.build_wheel(sys.argv[2])")


def _install_with_uv(uv: Path, venv: Path, root: Path, tmp: Path) -> None:
    # --no-config and a cwd of our own: the workspace's uv.toml / pyproject.toml must
    # not configure this install.
    uv_pip = [str(uv), "pip", "install", "--no-config"]
    backend, dist = tmp / "backend", tmp / "dist"
    _run([*uv_pip, "--python", sys.executable, "--target", str(backend), "--require-hashes",
          "--no-deps", "-r", str(root / "actions" / "_setup" / "build.lock")], cwd=tmp)
    src = _source_copy(root, tmp)
    dist.mkdir()
    build = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BUILD_WHEEL, str(backend),
                              str(dist)], cwd=src, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        py = ["--python", str(_python(venv))]
        # The lock is complete (every dependency pinned with its hashes), so nothing is
        # resolved over the network: --no-deps, then `uv pip check` proves nothing is
        # missing or incompatible.
        _run([*uv_pip, *py, "--require-hashes", "--no-deps",
              "-r", str(root / "requirements" / "runtime.lock")], cwd=tmp)
    finally:
        log, _ = build.communicate()
    if build.returncode != 0:
        print(log.decode(errors="replace"), flush=True)
        raise subprocess.CalledProcessError(build.returncode, ["setuptools build_wheel"])
    wheels = sorted(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(f"building forge-ci made {len(wheels)} wheels, not 1")
    _run([*uv_pip, *py, "--no-deps", "--no-index", str(wheels[0])], cwd=tmp)
    _run([str(uv), "pip", "check", "--no-config", *py], cwd=tmp)


def _install_with_pip(venv: Path, root: Path, tmp: Path) -> None:
    _run([sys.executable, "-m", "venv", str(venv)])
    _pip(venv, "--require-hashes", "-r", str(root / "requirements" / "runtime.lock"))
    build_lock = root / "actions" / "_setup" / "build.lock"
    _pip(venv, "--require-hashes", "--no-deps", "-r", str(build_lock))
    src = _source_copy(root, tmp)
    _pip(venv, "--no-deps", "--no-build-isolation", "--no-index", str(src))


def install(venv: Path, root: Path = ROOT, use: str = "uv") -> float:
    """Build the venv at ``venv`` (replacing any partial one); return the seconds taken.

    ``use`` is ``"uv"`` (falling back to pip where uv cannot be had or fails) or
    ``"pip"``.
    """
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    uv = installer(venv.parent, root) if use == "uv" else None
    used = "pip"
    if uv is not None:
        try:
            with tempfile.TemporaryDirectory(prefix="forge-src-") as tmp:
                _install_with_uv(uv, venv, root, Path(tmp))
            used = "uv"
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"uv could not install forge-ci ({e}); trying pip", flush=True)
            shutil.rmtree(venv, ignore_errors=True)
    if used == "pip":
        with tempfile.TemporaryDirectory(prefix="forge-src-") as tmp:
            _install_with_pip(venv, root, Path(tmp))
    seconds = time.monotonic() - started
    stamp = {"version": version(root), "key": venv.name, "python": sys.version,
             "installer": used, "seconds": round(seconds, 1),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (venv / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return seconds


def installer_choice(env: dict[str, str]) -> str:
    """``FORGE_CI_INSTALLER`` (``uv`` by default, or ``pip``); anything else is an error."""
    choice = env.get("FORGE_CI_INSTALLER", "").strip().lower() or "uv"
    if choice not in INSTALLERS:
        _error(f"FORGE_CI_INSTALLER={choice!r} is not one of {', '.join(INSTALLERS)} "
               "(unset it to use uv, the default)")
        raise SystemExit(2)
    return choice


def ensure(env: dict[str, str], root: Path = ROOT) -> Path:
    """Return a complete venv for this checkout, installing it first if needed."""
    venv = venv_path(env, root)
    if (venv / STAMP).is_file() and _python(venv).exists():
        return venv
    use = installer_choice(env)
    with _locked(venv.with_name(venv.name + ".lock")):
        if (venv / STAMP).is_file() and _python(venv).exists():
            return venv  # another job finished it while we waited
        with _group(f"Install forge-ci {version(root)} (first run with this lock)"):
            try:
                seconds = install(venv, root, use)
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
