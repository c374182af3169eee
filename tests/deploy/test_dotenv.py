"""The release's .env reads back exactly, in PHP's dotenv and in a shell, or is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forge_ci.deploy import dotenv
from forge_ci.errors import ConfigError, ExitCode
from tests.deploy import phpdotenv
from tests.deploy.conftest import LocalSite

WRITABLE = {
    "PLAIN": "example",
    "BACKTICK": "pa`touch PWNED`ss",
    "SUBST": "$(touch PWNED) and ${HOME} and $HOME",
    "EXPAND": "${DB_PASSWORD}",
    "QUOTES": "it's \"quoted\"",
    "BACKSLASHES": "C:\\path\\n-not-a-newline\\",
    "NEWLINES": "line one\nline two\n\n",
    "PEM": "-----BEGIN KEY-----\nAAAA==\n-----END KEY-----\n",
    "HASH": "no # comment",
    "SPACES": "  padded  ",
    "EQUALS_QUOTE": 'a="b" ; c="',
    "BACKTICK_EQUALS": 'a=`b` ; "c" = d #',
    "ONLY_QUOTE": '"',
    "TAB_FF_VT": "a\tb\fc\vd",
    "EMPTY": "",
    "UNICODE": "pässwörd ☃",
}

REFUSED = {
    "CR": "secret\r",
    "CRLF_LINES": "a\r\nb",
    "BACKTICK_AND_QUOTE": "a'b`c",
    "BACKTICK_AND_NEWLINE": "a`b\nc",
    "LINES_ENDING_IN_EQUALS": "AAAA\nBBBB==",
    "NUL": "a\0b",
    "BACKTICK_AND_EQUALS_QUOTE": 'a="b" `x`',
}


def read_with_shell(path: Path, shell: str, cwd: Path) -> dict[str, str]:
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    done = subprocess.run([shell, "-c", f'set -a; . "$1"; exec "$2" -c \'{dump}\'', shell,
                           str(path), sys.executable], env={"PATH": os.environ["PATH"]},
                          cwd=cwd, capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = json.loads(done.stdout)
    return env


def test_php_dotenv_reads_every_value_back_literally() -> None:
    entries = phpdotenv.parse(dotenv.render(WRITABLE).decode())
    assert {k: e.value for k, e in entries.items()} == WRITABLE
    assert not [k for k, e in entries.items() if e.expands_at]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_shell_sources_every_value_back_and_runs_nothing(tmp_path: Path, shell: str) -> None:
    path = tmp_path / ".env"
    path.write_bytes(dotenv.render(WRITABLE))
    env = read_with_shell(path, shell, tmp_path)
    assert {k: env[k] for k in WRITABLE} == WRITABLE
    assert not list(tmp_path.glob("PWNED*"))


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_value_no_notation_carries_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        dotenv.check("production", {"OK": "fine", key: REFUSED[key]})
    message = str(caught.value)
    assert f"environments.production.dotenv.{key}" in message
    assert REFUSED[key] not in message


def test_the_model_catches_what_the_old_writer_got_wrong() -> None:
    # What forge wrote before: raw CR and backticks in double quotes, \n for newlines.
    old = 'A="x\ry"\nB="a`id`b"\n'
    entries = phpdotenv.parse(old)
    assert entries["A"].value == "x\ny"  # phpdotenv splits at the CR
    with pytest.raises(phpdotenv.DotenvSyntaxError):
        phpdotenv.parse('B="a\\`id\\`b"\n')  # the escape a shell would need
    with pytest.raises(phpdotenv.DotenvSyntaxError):
        phpdotenv.parse('K="AAAA\nBBBB=="\nL="x"\n')  # why lines ending in '=' are refused


def test_a_local_deploy_writes_the_env_both_readers_read_back(
        local_site: LocalSite, tmp_path: Path) -> None:
    # (forge.yml itself expands ${VAR}: the SUBST and EXPAND cases are left to the unit tests)
    values = {k: WRITABLE[k] for k in ("BACKTICK", "QUOTES", "NEWLINES", "BACKSLASHES")}
    local_site.config(extra="    dotenv: " + json.dumps(values) + "\n")
    assert local_site.forge("deploy", "local") == 0
    env_file = local_site.target / "current/.env"
    entries = phpdotenv.parse(env_file.read_text())
    assert {k: entries[k].value for k in values} == values
    assert {k: v for k, v in read_with_shell(env_file, "sh", tmp_path).items()
            if k in values} == values


def test_a_local_deploy_with_a_carriage_return_touches_nothing(
        local_site: LocalSite, capsys: pytest.CaptureFixture[str]) -> None:
    local_site.config(extra="    dotenv: " + json.dumps({"DB_PASSWORD": "s3cret-x\r"}) + "\n")
    assert local_site.forge("deploy", "local") == ExitCode.USAGE
    assert "dotenv.DB_PASSWORD" in capsys.readouterr().err
    assert not (local_site.target / "releases").exists()
