"""The suite-wide secret scan (tests/conftest.py, tests/lab/leaks.py) sees a registered
secret anywhere a test's output goes, but not in ::add-mask:: lines, as a short
fragment, or in a file registered as holding it; and a test that leaks one fails."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from lab import leaks

from forge_ci.remote.local import LocalHost

TESTS = Path(__file__).resolve().parents[1]


def test_registered_secret_is_found_and_masks_are_not() -> None:
    secret = secrets.token_urlsafe(24)
    leaks.register(secret)
    assert leaks.found_in(f"error: login failed for {secret}!") == [secret[:6] + "…"]
    assert leaks.found_in(f"::add-mask::{secret}\nall fine") == []
    assert leaks.found_in("nothing here") == []
    assert leaks.found_in(f"bytes too: {secret}".encode()) == [secret[:6] + "…"]


def test_each_line_of_a_key_counts_but_armour_does_not() -> None:
    body = secrets.token_hex(32)
    armour = "-----{} OPENSSH PRIVATE KEY-----"
    leaks.register(f"{armour.format('BEGIN')}\n{body}\n{armour.format('END')}")
    assert leaks.found_in(f"key material {body[:40]}") == []  # a fragment is not the line
    assert leaks.found_in(f"key: {body}") == [body[:6] + "…"]
    assert leaks.found_in(f"glued:{secrets.token_hex(4)}{body}\\n") == [body[:6] + "…"]
    assert leaks.found_in("-----BEGIN OPENSSH PRIVATE KEY-----") == []


def test_secrets_with_any_character_are_found() -> None:
    odd = f"p@ss word {secrets.token_hex(8)}"  # not key-like in its first characters
    leaks.register(odd)
    assert leaks.found_in(f"DB_PASSWORD='{odd}'") == [odd[:6] + "…"]


def test_captured_subprocess_output_is_checked() -> None:
    assert leaks.checking_subprocess_output()
    secret = secrets.token_urlsafe(24)
    leaks.register(secret)
    subprocess.run(["echo", "harmless"], capture_output=True, check=True)
    assert leaks.take_findings() == []
    subprocess.run(["sh", "-c", f"echo {secret} >&2"], capture_output=True, check=True)
    assert leaks.take_findings() == [f"stderr of a `sh` run: {secret[:6]}…"]
    subprocess.check_output(["echo", secret], text=True)
    assert leaks.take_findings() == [f"stdout of a `echo` run: {secret[:6]}…"]


def test_what_forge_reads_from_its_own_commands_is_not_output() -> None:
    """forge in-process reads a hook's output to scrub it: only what it shows counts."""
    secret = secrets.token_urlsafe(24)
    leaks.register(secret)
    assert secret.encode() in LocalHost().run(f"echo {secret}").stdout
    assert leaks.take_findings() == []


def test_files_are_checked_except_registered_holders(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(24)
    leaks.register(secret)
    (tmp_path / "summary.md").write_text(f"deployed with {secret}\n")
    leaks.holds_secrets(tmp_path / "id_key")
    (tmp_path / "id_key").write_text(secret)
    target = leaks.deploy_target(tmp_path / "target")
    (target / "releases" / "r1").mkdir(parents=True)
    (target / "releases" / "r1" / ".env").write_text(f"DB_PASSWORD={secret}\n")
    (target / ".forge").mkdir()
    (target / ".forge" / "log.jsonl").write_text(f'{{"error": "{secret}"}}\n')
    (target / ".env").write_text(secret)  # not a release's .env
    (tmp_path / "data.bin").write_bytes(b"\0" + secret.encode())  # binary: data
    (tmp_path / "big.log").write_text(secret + "x" * leaks.MAX_TEXT)  # beyond the bound
    leaks.check_tree(tmp_path)
    found = sorted(f.split(": ")[0] for f in leaks.take_findings())
    assert found == [
        f"file {tmp_path}/summary.md",
        f"file {target}/.env",
        f"file {target}/.forge/log.jsonl",
    ]
    for name in ("summary.md", "target/.env", "target/.forge/log.jsonl"):
        (tmp_path / name).unlink()  # or this very test would fail for them


LEAKY = """
import subprocess
from pathlib import Path

import pytest

from lab import leaks

SECRET = {secret!r}
leaks.register(SECRET)


def test_prints() -> None:
    print("deploying with", SECRET)


def test_reads_a_subprocess() -> None:
    assert SECRET in subprocess.run(["echo", SECRET], capture_output=True, text=True).stdout


def test_reads_capsys(capsys: pytest.CaptureFixture[str]) -> None:
    print(SECRET)
    assert SECRET in capsys.readouterr().out


def test_leaves_a_summary(tmp_path: Path) -> None:
    (tmp_path / "summary.md").write_text(SECRET)


def test_keeps_it_in_a_key_file(tmp_path: Path) -> None:
    leaks.holds_secrets(tmp_path / "key").write_text(SECRET)


def test_masks_it(capsys: pytest.CaptureFixture[str]) -> None:
    print("::add-mask::" + SECRET)
"""


def test_a_test_that_leaks_fails(tmp_path: Path) -> None:
    """End to end, as the suite runs: the conftest's hook fails each leaking test."""
    test_file = tmp_path / "test_leaky.py"
    test_file.write_text(LEAKY.format(secret=secrets.token_urlsafe(24)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "conftest",
            "--rootdir",
            str(tmp_path),
            "--basetemp",
            str(tmp_path / "base"),
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    failed = {
        line.split("::")[1].split(" ")[0]
        for line in done.stdout.splitlines()
        if line.startswith("FAILED")
    }
    assert failed == {
        "test_prints",
        "test_reads_a_subprocess",
        "test_reads_capsys",
        "test_leaves_a_summary",
    }, textwrap.indent(done.stdout, "  ")
    assert "2 passed" in done.stdout
    assert "stdout of a `echo` run" in done.stdout and "output read with capsys" in done.stdout
    assert "summary.md" in done.stdout
