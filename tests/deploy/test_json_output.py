"""--json: one JSON object on stdout whatever happens, failures included, and a step
summary for every outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forge_ci.errors import ExitCode
from tests.deploy.conftest import LocalSite


def run(site: LocalSite, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = site.forge(*args, "--json")
    out = capsys.readouterr().out
    return code, json.loads(out)  # exactly one object: json.loads refuses anything more


def test_deploy_and_health_report_success_as_one_object(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run(local_site, capsys, "deploy", "local")
    assert code == 0 and data["ok"] is True and data["release"] == local_site.current
    code, data = run(local_site, capsys, "health", "local")
    assert code == 0 and data["ok"] is True


def test_rolled_back_deploy_prints_its_error_as_json(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert local_site.forge("deploy", "local") == 0
    local_site.write("web/index.html", "error 500\n")
    code, data = run(local_site, capsys, "deploy", "local")
    assert code == ExitCode.ROLLED_BACK
    assert data["ok"] is False and data["exit_code"] == ExitCode.ROLLED_BACK
    assert data["kind"] == "RolledBack" and data["command"] == "deploy" and data["error"]
    assert "hint" in data


def test_failing_health_prints_its_error_as_json(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local_site.forge("deploy", "local") == 0
    (local_site.target / "current/web/index.html").write_text("error 500\n")
    code, data = run(local_site, capsys, "health", "local", "--timeout", "0.5")
    assert code == ExitCode.FAILED
    assert data == {**data, "ok": False, "exit_code": 1, "kind": "HealthError"}


def test_failing_rollback_prints_its_error_as_json(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    local_site.env["GITHUB_STEP_SUMMARY"] = str(summary)
    assert local_site.forge("deploy", "local") == 0
    code, data = run(local_site, capsys, "rollback", "local", "--to", "nope")
    assert code == ExitCode.USAGE and data["ok"] is False and data["exit_code"] == 2
    code, data = run(local_site, capsys, "rollback", "local")  # nothing to go back to
    assert code != 0 and data["ok"] is False and data["exit_code"] == code
    assert "there is no earlier good release" in summary.read_text()


def test_usage_errors_and_config_errors_are_json_too(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run(local_site, capsys, "deploy", "locale")
    assert code == ExitCode.USAGE and data["kind"] == "ConfigError"
    assert data["hint"] == "did you mean 'local'?"
    with pytest.raises(SystemExit):
        local_site.forge("deploy", "--bogus", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["exit_code"] == ExitCode.USAGE


def test_every_outcome_of_an_action_verb_writes_a_step_summary(
    local_site: LocalSite, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    local_site.env["GITHUB_STEP_SUMMARY"] = str(summary)
    assert local_site.forge("deploy", "local", "--dry-run") == 0
    assert "forge-ci deploy --dry-run local: done" in summary.read_text()
    local_site.config(extra="    hooks: {before_switch: ['exit 7']}\n")
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    assert "failed, the live site was not touched" in summary.read_text()


def test_releases_are_listed_oldest_first(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for v in ("1", "2"):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        ids.append(local_site.current)
    code, data = run(local_site, capsys, "releases", "local")
    assert code == 0 and [r["id"] for r in data["releases"]] == ids
    assert local_site.forge("releases", "local") == 0
    lines = capsys.readouterr().out.splitlines()
    assert ids[0] in lines[0] and ids[1] in lines[-1]
