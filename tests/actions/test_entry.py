"""forge_ci.actions: inputs checked before forge-ci runs, env lines exported and masked,
AWS through OIDC. forge-ci itself is replaced by a recorder: these are plans as data."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from lab.webserver import serve

from forge_ci import actions, gha
from forge_ci.actions import InputError, parse_env_lines, plan


def _env(tmp_path: Path, **inputs: str) -> dict[str, str]:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "out"),
           "RUNNER_TEMP": str(tmp_path)}
    for k, v in inputs.items():
        env[f"INPUT_{k.upper()}"] = v
    return env


def _run(action: str, env: dict[str, str], code: int = 0) -> tuple[int, list[list[str]], str]:
    calls: list[list[str]] = []

    def forge(argv: Sequence[str], e: Any, cwd: Path) -> int:
        calls.append(list(argv))
        return code

    out = io.StringIO()
    with redirect_stdout(out):
        rc = actions.run(action, env, forge=forge)
    return rc, calls, out.getvalue()


# -- plans ---------------------------------------------------------------------------

def test_deploy_plan(tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    env = _env(tmp_path, environment="production", config="site/forge.yml",
               working_directory=str(tmp_path), artifact="art")
    _, argvs = plan("deploy", env)
    assert argvs == [["deploy", "production", "--config=site/forge.yml", "--artifact=art"]]


def test_defaults(tmp_path: Path) -> None:
    inputs, argvs = plan("rollback", _env(tmp_path, environment="staging"))
    assert inputs.config == "forge.yml" and inputs.working_directory == Path(".")
    assert argvs == [["rollback", "staging", "--config=forge.yml"]]


def test_rollback_to_a_release(tmp_path: Path) -> None:
    _, argvs = plan("rollback", _env(tmp_path, environment="prod",
                                     release="20261126T163335Z-bbafe40c"))
    assert argvs[0][-1] == "--to=20261126T163335Z-bbafe40c"


def test_backup_then_verify_then_prune(tmp_path: Path) -> None:
    _, argvs = plan("backup", _env(tmp_path, environment="prod", verify="true", prune="TRUE"))
    assert [a[0] for a in argvs] == ["backup", "verify", "prune"]
    _, argvs = plan("backup", _env(tmp_path, environment="prod", verify="false"))
    assert [a[0] for a in argvs] == ["backup"]


def test_restore_needs_the_environment_name_as_confirmation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="confirm"):
        plan("restore", _env(tmp_path, environment="production", confirm="yes"))
    _, argvs = plan("restore", _env(tmp_path, environment="production",
                                    confirm="production", snapshot="s-1"))
    assert argvs == [["restore", "production", "--config=forge.yml", "--yes", "--snapshot=s-1"]]


def test_provision_no_wait(tmp_path: Path) -> None:
    _, argvs = plan("provision", _env(tmp_path, environment="prod", no_wait="true"))
    assert argvs == [["provision", "prod", "--config=forge.yml", "--no-wait"]]


def test_monitor_plan_and_which_severity_fails_the_step(tmp_path: Path) -> None:
    env = _env(tmp_path, environment="prod", state="/w/.forge-monitor/state.json",
               last_activity="2026-10-01T12:00:00+02:00")
    _, argvs = plan("monitor", env)
    assert argvs == [["monitor", "prod", "--config=forge.yml",
                      "--state=/w/.forge-monitor/state.json",
                      "--last-activity=2026-10-01T12:00:00+02:00"]]
    assert _run("monitor", env, code=6)[0] == 6  # critical fails by default
    assert _run("monitor", env, code=5)[0] == 0  # a warning does not
    assert _run("monitor", env | {"INPUT_FAIL_ON": "warning"}, code=5)[0] == 5
    assert _run("monitor", env | {"INPUT_FAIL_ON": "never"}, code=6)[0] == 0
    assert _run("monitor", env, code=1)[0] == 1  # the monitor itself failed
    _, argvs = plan("drill", _env(tmp_path, environment="prod"))
    assert argvs == [["drill", "prod", "--config=forge.yml"]]


@pytest.mark.parametrize(("action", "inputs", "message"), [
    ("deploy", {}, "'environment' is required"),
    ("deploy", {"environment": "-rf"}, "environment"),
    ("deploy", {"environment": "prod; rm -rf /"}, "environment"),
    ("deploy", {"environment": "prod", "config": "--help"}, "config"),
    ("deploy", {"environment": "prod", "config": "a\nb"}, "single line"),
    ("deploy", {"environment": "prod", "artifact": "missing"}, "artifact"),
    ("deploy", {"environment": "prod", "working_directory": "nowhere"}, "working-directory"),
    ("rollback", {"environment": "prod", "release": "../../etc"}, "release id"),
    ("rollback", {"environment": "prod", "release": "$(id)"}, "release id"),
    ("backup", {"environment": "prod", "verify": "yes"}, "true or false"),
    ("restore", {"environment": "prod", "confirm": "prod", "snapshot": "a b"}, "snapshot"),
    ("nope", {"environment": "prod"}, "unknown action"),
    ("monitor", {"environment": "prod", "fail_on": "sometimes"}, "fail-on"),
    ("monitor", {"environment": "prod", "last_activity": "$(id)"}, "last-activity"),
    ("monitor", {"environment": "prod", "state": "--json"}, "state"),
])
def test_bad_inputs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str,
                                inputs: dict[str, str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        plan(action, _env(tmp_path, **inputs))


def test_bad_input_exits_2_with_an_error_line_and_runs_nothing(tmp_path: Path) -> None:
    rc, calls, out = _run("deploy", _env(tmp_path, environment="bad name"))
    assert rc == 2 and calls == []
    assert out.startswith("::error title=forge deploy::input 'environment'")


def test_forge_failure_stops_the_sequence_with_its_code(tmp_path: Path) -> None:
    env = _env(tmp_path, environment="prod", verify="true", prune="true")
    rc, calls, _ = _run("backup", env, code=3)
    assert rc == 3 and len(calls) == 1


def test_working_directory_is_where_forge_runs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    seen: list[Path] = []
    cwd = os.getcwd()

    def forge(argv: Sequence[str], e: Any, where: Path) -> int:
        seen.append(where)
        return 0

    env = _env(tmp_path, environment="prod", working_directory=str(site))
    with redirect_stdout(io.StringIO()):
        assert actions.run("deploy", env, forge=forge) == 0
    assert seen == [site] and os.getcwd() == cwd


# -- FORGE_ENV lines -----------------------------------------------------------------------

def test_env_lines_parse_literally() -> None:
    text = "# comment\n\nDB_PASSWORD=p=a$s 'x'\r\nEMPTY=\n  SPACED = v \n"
    assert parse_env_lines(text) == {"DB_PASSWORD": "p=a$s 'x'", "EMPTY": "", "SPACED": " v "}


@pytest.mark.parametrize(("text", "message"), [
    ("novalue", "line 1: expected NAME=value"),
    ("1BAD=x", "line 1: expected"),
    ("A=1\nA=2", "line 2: A is given twice"),
    ("PATH=/tmp", "PATH cannot be set"),
    ("LD_PRELOAD=/x.so", "LD_PRELOAD cannot be set"),
    ("GITHUB_OUTPUT=/x", "GITHUB_OUTPUT cannot be set"),
    ("PYTHONPATH=/x", "PYTHONPATH cannot be set"),
])
def test_env_lines_errors_name_the_line_never_the_value(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        parse_env_lines(text)
    assert "/x" not in str(e.value) and "/tmp" not in str(e.value)


def test_env_lines_are_masked_then_exported_and_the_blob_removed(tmp_path: Path) -> None:
    env = _env(tmp_path, environment="prod")
    env["FORGE_ENV"] = "DB_PASSWORD=hunter2-db-secret\nAWS_ENDPOINT_URL=http://127.0.0.1:9"
    got: dict[str, str] = {}

    def forge(argv: Sequence[str], e: Any, cwd: Path) -> int:
        got.update(e)
        return 0

    out = io.StringIO()
    with redirect_stdout(out):
        assert actions.run("deploy", env, forge=forge) == 0
    assert got["DB_PASSWORD"] == "hunter2-db-secret"
    assert "FORGE_ENV" not in got
    lines = out.getvalue().splitlines()
    assert "::add-mask::hunter2-db-secret" in lines
    # the mask comes before anything else is printed
    assert lines.index("::add-mask::hunter2-db-secret") == 0


def test_env_line_conflicting_with_the_step_env_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, environment="prod")
    env.update(FORGE_ENV="DB_PASSWORD=one", DB_PASSWORD="two")
    rc, calls, out = _run("deploy", env)
    assert rc == 2 and not calls and "DB_PASSWORD is also set" in out
    assert "=one" not in out


# -- AWS through OIDC ---------------------------------------------------------------------

class _TokenServer(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        _TokenServer.requests.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"value": "header.payload-oidc-jwt.signature"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def token_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _TokenServer)
    serve(server)
    _TokenServer.requests.clear()
    try:
        yield f"http://127.0.0.1:{server.server_port}/token?api-version=2.0"
    finally:
        server.shutdown()
        server.server_close()


def test_oidc_token_is_fetched_masked_and_written_0600(tmp_path: Path, token_url: str) -> None:
    env = {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/forge-backup",
           "ACTIONS_ID_TOKEN_REQUEST_URL": token_url,
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-bearer-token",
           "RUNNER_TEMP": str(tmp_path), "GITHUB_RUN_ID": "42", "GITHUB_ACTIONS": "true"}
    out = io.StringIO()
    with redirect_stdout(out):
        assert actions.oidc_aws(env, gha.Runner.from_env(env)) is True
    path, auth = _TokenServer.requests[0]
    assert "audience=sts.amazonaws.com" in path and "api-version=2.0" in path
    assert auth == "Bearer request-bearer-token"
    token_file = Path(env["AWS_WEB_IDENTITY_TOKEN_FILE"])
    assert token_file.read_text() == "header.payload-oidc-jwt.signature"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert env["AWS_ROLE_SESSION_NAME"] == "forge-42-1"
    assert "::add-mask::header.payload-oidc-jwt.signature" in out.getvalue()


def test_oidc_not_used_with_static_keys_or_without_a_role(tmp_path: Path) -> None:
    runner = gha.Runner()
    assert actions.oidc_aws({}, runner) is False
    assert actions.oidc_aws({"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/x",
                             "AWS_ACCESS_KEY_ID": "AKIA"}, runner) is False


def test_oidc_without_id_token_permission_says_what_to_grant() -> None:
    with pytest.raises(InputError, match="id-token: write"):
        actions.oidc_aws({"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/x"}, gha.Runner())
    with pytest.raises(InputError, match="not an IAM role ARN"):
        actions.oidc_aws({"AWS_ROLE_ARN": "role/x"}, gha.Runner())


def test_secrets_not_given_are_unset_not_empty(tmp_path: Path) -> None:
    env = _env(tmp_path, environment="prod")
    env.update(AWS_REGION="", AWS_ACCESS_KEY_ID="  ", FORGE_SSH_KEY="", FORGE_ENV="",
               HCLOUD_TOKEN="keep-me")
    got: dict[str, str] = {}

    def forge(argv: Sequence[str], e: Any, cwd: Path) -> int:
        got.update(e)
        return 0

    with redirect_stdout(io.StringIO()):
        assert actions.run("deploy", env, forge=forge) == 0
    assert not {"AWS_REGION", "AWS_ACCESS_KEY_ID", "FORGE_SSH_KEY", "FORGE_ENV"} & set(got)
    assert got["HCLOUD_TOKEN"] == "keep-me"
