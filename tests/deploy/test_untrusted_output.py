"""Hook output and a server's stderr reach the log as text, never as workflow commands."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from lab.sshd import SshHost
from lab.users import chown_tree

from forge_ci.cli import main
from forge_ci.errors import ExitCode
from tests.actions_log import commands
from tests.deploy.conftest import LocalSite

FORGED = ["::stop-commands::x", "::add-mask::foo", "::set-output name=release-id::pwned",
          "::error title=pwned::pwned", "##[set-output name=release-id;]pwned"]
PRINT = "printf '%s\\n' " + " ".join(f"'{line}'" for line in FORGED)


def actions_env(tmp: Path, base: dict[str, str]) -> dict[str, str]:
    (tmp / "out").write_text("")
    (tmp / "summary").write_text("")
    return {**base, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp / "out"),
            "GITHUB_STEP_SUMMARY": str(tmp / "summary")}


def run_logged(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    # stdout and stderr in one ordered log, as the runner reads a step.
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = main(argv, env=env)
    return code, log.getvalue()


def assert_only_text(log: str, tmp: Path) -> None:
    for line in FORGED:
        assert line in log  # still shown to the reader
    cmds = commands(log)
    tokens = [data for name, data in cmds if name == "stop-commands"]
    assert tokens, log
    for name, data in cmds:
        assert "pwned" not in data, (name, data)
        assert (name, data) != ("add-mask", "foo")
        assert (name, data) != ("stop-commands", "x")
        assert not any(data in line for line in FORGED if name == "stop-commands")
    assert "pwned" not in (tmp / "out").read_text()
    assert "pwned" not in (tmp / "summary").read_text()


def test_hook_output_in_a_local_deploy_stays_text(local_site: LocalSite, tmp_path: Path) -> None:
    local_site.config(extra=f"    hooks: {{before_switch: [\"{PRINT}; {PRINT} >&2\"]}}\n")
    env = actions_env(tmp_path, local_site.env)
    code, log = run_logged(["deploy", "local", "--config", str(local_site.src / "forge.yml")],
                           env)
    assert code == 0, log
    assert_only_text(log, tmp_path)
    assert "release-id=" in (tmp_path / "out").read_text()  # forge's own output still works


@pytest.mark.lab
def test_remote_stderr_of_a_failing_hook_stays_text(
        sshd_host: SshHost, lab_dir: Path, tmp_path: Path) -> None:
    src = lab_dir / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.html").write_text("v1\n")
    site = lab_dir / "site"
    site.mkdir()
    chown_tree(lab_dir, sshd_host.user)
    (src / "forge.yml").write_text(
        "version: 1\nproject: p\nenvironments:\n  prod:\n"
        f"    hosts: [{{host: 127.0.0.1, port: {sshd_host.port}, user: {sshd_host.user}}}]\n"
        f"    path: {site}\n    marker: false\n"
        f"    hooks: {{before_switch: [\"{PRINT} >&2; exit 3\"]}}\n")
    env = actions_env(tmp_path, {**sshd_host.env(), "PATH": os.environ["PATH"]})
    code, log = run_logged(["deploy", "prod", "--config", str(src / "forge.yml")], env)
    assert code == ExitCode.FAILED, log
    assert_only_text(log, tmp_path)


def test_build_command_output_stays_text(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.html").write_text("ok\n")
    (src / "forge.yml").write_text(
        "version: 1\nproject: p\nbuild:\n"
        f"  commands: [\"{PRINT}; {PRINT} >&2\"]\n"
        "environments:\n  local: {path: ../target}\n")
    env = actions_env(tmp_path, {"PATH": os.environ["PATH"]})
    code, log = run_logged(["build", "--config", str(src / "forge.yml")], env)
    assert code == 0, log
    assert_only_text(log, tmp_path)
