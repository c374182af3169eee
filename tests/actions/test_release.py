"""scripts/release: the release commit stamps the reusable workflows with its own tag,
tags are immutable, the major tag only moves forward, main is left as it was."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ._files import FORGE_USES, REPO, REUSABLE, load, steps_of


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "forge"
    (root / "scripts").mkdir(parents=True)
    (root / "forge_ci").mkdir()
    shutil.copytree(REPO / ".github" / "workflows", root / ".github" / "workflows")
    shutil.copy2(REPO / "scripts" / "release", root / "scripts" / "release")
    (root / "forge_ci" / "__init__.py").write_text('__version__ = "1.2.0"\n')
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "main")
    return root


def _release(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["python3", str(root / "scripts" / "release"), *args], cwd=root,
                          capture_output=True, text=True, env=env, timeout=60)


def _forge_refs(root: Path) -> set[str]:
    refs = set()
    for name in REUSABLE:
        for step in steps_of(load(root / ".github" / "workflows" / f"{name}.yml")):
            m = FORGE_USES.match(step.get("uses", ""))
            if m:
                refs.add(m["ref"])
    return refs


def test_stamp_points_every_reusable_workflow_at_the_tag(repo: Path) -> None:
    r = _release(repo, "--stamp", "v1.2.0", str(repo))
    assert r.returncode == 0, r.stderr
    assert _forge_refs(repo) == {"v1.2.0"}
    r = _release(repo, "--stamp", "v1.2.0", str(repo))
    assert r.returncode != 0 and "no `org/forge/actions/...@main`" in r.stderr


def test_release_tags_a_stamped_commit_and_moves_v1(repo: Path) -> None:
    main_before = _git(repo, "rev-parse", "main")
    r = _release(repo, "1.2.0")
    assert r.returncode == 0, r.stderr
    tagged = _git(repo, "rev-parse", "v1.2.0^{commit}")
    assert _git(repo, "rev-parse", "v1^{commit}") == tagged
    assert _git(repo, "rev-parse", f"{tagged}^") == main_before
    assert _git(repo, "rev-parse", "main") == main_before  # main keeps @main
    assert _forge_refs(repo) == {"main"}
    for name in REUSABLE:
        text = _git(repo, "show", f"v1.2.0:.github/workflows/{name}.yml")
        assert f"org/forge/actions/{name}@v1.2.0" in text and "@main" not in text
    assert not _git(repo, "worktree", "list").count("\n")  # temporary worktree removed


def test_tags_are_immutable_and_v1_only_moves_forward(repo: Path) -> None:
    assert _release(repo, "1.2.0").returncode == 0
    r = _release(repo, "1.2.0")
    assert r.returncode == 1 and "immutable" in r.stderr
    (repo / "forge_ci" / "__init__.py").write_text('__version__ = "1.1.9"\n')
    _git(repo, "commit", "-qam", "older")
    r = _release(repo, "1.1.9")
    assert r.returncode == 1 and "only moves forward" in r.stderr


def test_release_refuses_a_version_the_package_does_not_say(repo: Path) -> None:
    r = _release(repo, "1.3.0")
    assert r.returncode == 1 and "__version__" in r.stderr
