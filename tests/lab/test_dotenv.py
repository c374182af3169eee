"""The example site's .env reader (PHP) reads back what the lab's writer
(Python) writes, tricky characters included."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lab import require_binary
from lab.bedrock import EXAMPLE, SALTS, write_env
from lab.policy import lab_required

READ = """
require getenv('DOTENV_PHP');
echo json_encode(forge_parse_dotenv(file_get_contents(getenv('DOTENV_FILE'))));
"""


def parse_with_php(path: Path) -> dict[str, str]:
    with lab_required():
        php = require_binary("php")
    env = {"DOTENV_PHP": str(EXAMPLE / "config" / "dotenv.php"), "DOTENV_FILE": str(path)}
    done = subprocess.run(
        [php, "-r", READ], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    parsed: dict[str, str] = json.loads(done.stdout)
    return parsed


def test_round_trip(lab_dir: Path) -> None:
    values = {
        "PLAIN": "example",
        "SPACES": "  two words  ",
        "QUOTES": 'it\'s "quoted"',
        "DOLLAR": "pa$$word ${NOT_EXPANDED}",
        "HASH": "no # comment here",
        "BACKSLASH": "C:\\path\\n-not-a-newline",
        "NEWLINE": "line one\nline two",
        "EMPTY": "",
    }
    path = write_env(lab_dir / ".env", values, owner="root")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    parsed = parse_with_php(path)
    assert {name: parsed[name] for name in values} == values
    assert all(len(parsed[name]) == 64 for name in SALTS)


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("KEY=bare value # comment", "bare value"),
        ("export KEY=exported", "exported"),
        ("KEY='single $literal \\n'", "single $literal \\n"),
        ('KEY="double" # comment', "double"),
        ("KEY = spaced", "spaced"),
    ],
)
def test_hand_written_lines(lab_dir: Path, line: str, value: str) -> None:
    path = lab_dir / ".env"
    path.write_text(f"# a comment\n\n{line}\n")
    assert parse_with_php(path) == {"KEY": value}


def test_bad_line_is_an_error(lab_dir: Path) -> None:
    path = lab_dir / ".env"
    path.write_text("OK=1\nthis is not an assignment\n")
    with pytest.raises(subprocess.CalledProcessError) as caught:
        parse_with_php(path)
    assert ".env line 2" in caught.value.stderr + caught.value.stdout
