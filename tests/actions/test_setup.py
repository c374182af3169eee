"""actions/_setup/run.py: the venv key, where the venv lives, the warm path.

The cold install itself (uv, or pip, from the hash-locked files) runs in the e2e suite
and in bench/bench_action_overhead.py; here the decisions around it are checked, and
the pieces that need no network (the pip that installs uv, uv's fallback) run for real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from ._files import REPO

SETUP = REPO / "actions" / "_setup" / "run.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("forge_setup_run", SETUP)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run = _module()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "forge"
    (root / "requirements").mkdir(parents=True)
    (root / "forge_ci" / "sub" / "__pycache__").mkdir(parents=True)
    (root / "requirements" / "runtime.lock").write_text("pydantic==2 --hash=sha256:aa\n")
    (root / "actions" / "_setup").mkdir(parents=True)
    (root / "actions" / "_setup" / "build.lock").write_text("setuptools==1 --hash=sha256:bb\n")
    (root / "actions" / "_setup" / "installer.lock").write_text("uv==1 --hash=sha256:cc\n")
    (root / "pyproject.toml").write_text("[project]\nname='forge-ci'\n")
    (root / "forge_ci" / "__init__.py").write_text('__version__ = "1.2.3"\n')
    (root / "forge_ci" / "sub" / "x.sh").write_text("echo\n")
    return root


def test_key_is_stable_and_ignores_bytecode(tree: Path) -> None:
    key = run.cache_key(tree)
    (tree / "forge_ci" / "sub" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (tree / "forge_ci" / "y.pyc").write_bytes(b"\0")
    assert run.cache_key(tree) == key


@pytest.mark.parametrize("change", ["requirements/runtime.lock", "actions/_setup/build.lock",
                                    "actions/_setup/installer.lock", "pyproject.toml",
                                    "forge_ci/sub/x.sh", "forge_ci/new.py"])
def test_key_changes_with_the_lock_or_any_package_file(tree: Path, change: str) -> None:
    key = run.cache_key(tree)
    (tree / change).write_text("changed\n")
    assert run.cache_key(tree) != key


def test_venv_location(tree: Path, tmp_path: Path) -> None:
    py = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    v = run.venv_path({"RUNNER_TOOL_CACHE": str(tmp_path / "tc")}, tree)
    assert v.parent == tmp_path / "tc" / "forge-ci"
    assert v.name.startswith(f"1.2.3-{py}-") and len(v.name.rsplit("-", 1)[1]) == 32
    assert run.venv_path({"FORGE_CI_CACHE": str(tmp_path / "c"),
                          "RUNNER_TOOL_CACHE": "/ignored"}, tree).parent == tmp_path / "c"
    assert run.cache_dir({}) == Path.home() / ".cache" / "forge-ci"


def test_warm_path_installs_nothing(tree: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"FORGE_CI_CACHE": str(tmp_path / "cache")}
    venv = run.venv_path(env, tree)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / run.STAMP).write_text("{}")

    def boom(*a: object) -> float:
        raise AssertionError("installed on the warm path")

    monkeypatch.setattr(run, "install", boom)
    assert run.ensure(env, tree) == venv


def test_partial_venv_without_stamp_is_rebuilt(tree: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"FORGE_CI_CACHE": str(tmp_path / "cache")}
    venv = run.venv_path(env, tree)
    (venv / "bin").mkdir(parents=True)  # an interrupted install: no stamp
    calls: list[Path] = []

    def fake_install(v: Path, root: Path, use: str) -> float:
        calls.append(v)
        (v / "bin").mkdir(parents=True, exist_ok=True)
        (v / "bin" / "python").symlink_to(sys.executable)
        (v / run.STAMP).write_text("{}")
        return 0.0

    monkeypatch.setattr(run, "install", fake_install)
    assert run.ensure(env, tree) == venv and calls == [venv]
    assert run.ensure(env, tree) == venv and calls == [venv]


def test_failed_install_removes_the_partial_venv_and_says_why(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FORGE_CI_CACHE": str(tmp_path / "cache")}
    monkeypatch.setenv("GITHUB_ACTIONS", "true")

    def failing(v: Path, root: Path, use: str) -> float:
        v.mkdir(parents=True)
        raise subprocess.CalledProcessError(1, ["pip"])

    monkeypatch.setattr(run, "install", failing)
    with pytest.raises(SystemExit):
        run.ensure(env, tree)
    assert not run.venv_path(env, tree).exists()
    out = capsys.readouterr().out
    assert "::group::Install forge-ci 1.2.3" in out
    assert "::error title=forge setup::could not install forge-ci" in out


def test_source_copy_leaves_the_checkout_untouched(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "build"
    dest.mkdir()
    src = run._source_copy(tree, dest)
    assert (src / "README.md").is_file() and (src / "forge_ci" / "sub" / "x.sh").is_file()
    assert not (src / "forge_ci" / "sub" / "__pycache__").exists()
    assert sorted(p.name for p in tree.iterdir()) == ["actions", "forge_ci", "pyproject.toml",
                                                       "requirements"]


@pytest.mark.parametrize("lock", ["build.lock", "installer.lock"])
def test_setup_locks_are_hash_pinned(lock: str) -> None:
    text = (REPO / "actions" / "_setup" / lock).read_text()
    reqs = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert reqs and all("==" in r for r in reqs)
    assert text.count("--hash=sha256:") >= len(reqs)


def test_installer_lock_pins_uv_wheels_for_the_hosted_runners() -> None:
    # One requirement (uv itself); a hash per platform wheel, so Linux x64/arm64 and
    # macOS runners each find theirs (a missing one would mean pip, slowly).
    text = (REPO / "actions" / "_setup" / "installer.lock").read_text()
    reqs = [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert len(reqs) == 1 and reqs[0].startswith("uv==")
    assert text.count("--hash=sha256:") >= 4


@pytest.mark.parametrize(("value", "want"), [(None, "uv"), ("", "uv"), ("uv", "uv"),
                                             ("pip", "pip"), (" PIP ", "pip")])
def test_installer_choice(value: str | None, want: str) -> None:
    env = {} if value is None else {"FORGE_CI_INSTALLER": value}
    assert run.installer_choice(env) == want


def test_unknown_installer_is_refused_before_anything_is_installed(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FORGE_CI_CACHE": str(tmp_path / "cache"), "FORGE_CI_INSTALLER": "conda"}

    def boom(*a: object) -> float:
        raise AssertionError("installed despite a bad FORGE_CI_INSTALLER")

    monkeypatch.setattr(run, "install", boom)
    with pytest.raises(SystemExit) as e:
        run.ensure(env, tree)
    assert e.value.code == 2
    out = capsys.readouterr().out
    assert "FORGE_CI_INSTALLER='conda'" in out and "uv, pip" in out
    assert not (tmp_path / "cache").exists()


def test_pip_install_skips_uv(tree: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []

    def no_uv(*a: object) -> Path:
        raise AssertionError("uv fetched although pip was asked for")

    def fake_pip(venv: Path, root: Path, tmp: Path) -> None:
        used.append("pip")
        venv.mkdir(parents=True)

    monkeypatch.setattr(run, "installer", no_uv)
    monkeypatch.setattr(run, "_install_with_pip", fake_pip)
    venv = tmp_path / "cache" / "v"
    run.install(venv, tree, "pip")
    assert used == ["pip"]
    assert json.loads((venv / run.STAMP).read_text())["installer"] == "pip"


def test_a_failing_uv_install_falls_back_to_pip_from_scratch(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []

    def failing_uv(uv: Path, venv: Path, root: Path, tmp: Path) -> None:
        (venv / "half-done").mkdir(parents=True)
        raise subprocess.CalledProcessError(2, ["uv", "pip", "install"])

    def fake_pip(venv: Path, root: Path, tmp: Path) -> None:
        venv.mkdir(parents=True)  # fails if the half-made venv were still there
        seen.append("pip")

    monkeypatch.setattr(run, "installer", lambda cache, root: tmp_path / "uv")
    monkeypatch.setattr(run, "_install_with_uv", failing_uv)
    monkeypatch.setattr(run, "_install_with_pip", fake_pip)
    venv = tmp_path / "cache" / "v"
    run.install(venv, tree, "uv")
    assert seen == ["pip"]  # the half-made venv was removed first
    assert json.loads((venv / run.STAMP).read_text())["installer"] == "pip"
    assert "uv could not install forge-ci" in capsys.readouterr().out


def test_uv_that_cannot_be_had_means_pip_and_leaves_nothing(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Real pip, offline: no index, so the locked uv cannot be found.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    cache = tmp_path / "cache"
    assert run.installer(cache, tree) is None
    assert not run.uv_home(cache, tree).exists()
    assert f"uv from {run.INSTALLER_LOCK} is not available here" in capsys.readouterr().out


def test_installed_uv_is_reused_without_pip(tree: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = run.uv_home(tmp_path, tree)
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "uv").write_text("#!/bin/sh\n")
    (home / run.STAMP).write_text("{}")

    def boom(*a: object) -> None:
        raise AssertionError("pip ran for an installed uv")

    monkeypatch.setattr(run, "_run", boom)
    assert run.installer(tmp_path, tree) == home / "bin" / "uv"
    (tree / "actions" / "_setup" / "installer.lock").write_text("uv==2 --hash=sha256:dd\n")
    assert run.uv_home(tmp_path, tree) != home  # a new lock, a new uv


def test_bundled_pip_runs() -> None:
    # The fallback for an interpreter without pip of its own: ensurepip's wheel.
    import ensurepip

    r = subprocess.run([*run._bundled_pip(), "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pip {ensurepip.version()} from ")


def test_wheel_build_needs_only_the_backend_folder(tmp_path: Path) -> None:
    # What the uv path runs beside uv: setuptools from a folder given on the command
    # line, no site-packages (-S), building from a copy of the checkout.
    import setuptools

    backend = Path(setuptools.__file__).parent.parent
    src = run._source_copy(REPO, tmp_path)
    dist = tmp_path / "dist"
    dist.mkdir()
    r = subprocess.run([sys.executable, "-I", "-S", "-c", run._BUILD_WHEEL, str(backend),
                        str(dist)], cwd=src, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = dist.glob("forge_ci-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "forge_ci/actions.py" in names and "forge_ci/cli.py" in names
    assert not any("__pycache__" in n for n in names)


def test_entry_refuses_old_python_and_usage(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-I", "-S", str(SETUP)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3")
def test_ensure_prints_an_existing_venv_fast(tmp_path: Path) -> None:
    # The real script, in a subprocess, against a prepared stamp: no pip involved.
    env = {**os.environ, "FORGE_CI_CACHE": str(tmp_path)}
    venv = run.venv_path(env)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / run.STAMP).write_text(json.dumps({"key": venv.name}))
    r = subprocess.run([sys.executable, "-I", "-S", str(SETUP), "--ensure"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(venv)
