"""zizmor and actionlint pass on the repository, and fail on what they must catch.

Both run through scripts/lint, the same command CI and developers run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ._files import REPO

LINT = REPO / "scripts" / "lint"


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LINT), *args], capture_output=True, text=True,
                          timeout=300, env=_env())


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return {**env, "NO_COLOR": "1"}


def test_repository_passes_zizmor_and_actionlint() -> None:
    r = _lint()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No findings to report" in r.stdout
    assert "All workflow files passed" in r.stdout


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    return tmp_path


def test_template_injection_fails_both_linters(bad_tree: Path) -> None:
    (bad_tree / ".github" / "workflows" / "bad.yml").write_text(
        "on: issues\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    permissions: {}\n    steps:\n"
        "      - run: echo \"${{ github.event.issue.title }}\"\n")
    r = _lint(str(bad_tree))
    assert r.returncode != 0
    assert "template-injection" in r.stdout
    assert "potentially untrusted" in r.stdout


def test_actionlint_catches_a_bad_expression(bad_tree: Path) -> None:
    (bad_tree / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    permissions: {}\n    steps:\n"
        "      - env: { X: \"${{ steps.nope.outputs.x }}\" }\n        run: echo \"$X\"\n")
    r = _lint(str(bad_tree))
    assert r.returncode != 0
    assert 'property "nope" is not defined' in r.stdout and "lint: FAILED" in r.stderr


def test_zizmor_audits_composite_actions(bad_tree: Path) -> None:
    (bad_tree / ".github" / "workflows" / "ok.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    permissions: {}\n    steps:\n      - run: echo hi\n")
    act = bad_tree / "actions" / "x"
    act.mkdir(parents=True)
    (act / "action.yml").write_text(
        "name: x\ndescription: x\ninputs:\n  who: {description: w}\nruns:\n  using: composite\n"
        "  steps:\n    - shell: bash\n      run: echo \"${{ inputs.who }}\"\n")
    r = _lint(str(bad_tree))
    assert r.returncode != 0
    assert "actions/x/action.yml" in r.stdout and "template-injection" in r.stdout


def test_no_workflow_files_is_an_error_not_a_pass(tmp_path: Path) -> None:
    r = _lint(str(tmp_path))
    assert r.returncode != 0 and "nothing to lint" in r.stderr
