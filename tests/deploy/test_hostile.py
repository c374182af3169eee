"""Config values that try shell injection, and secrets that must never be printed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from lab import leaks as lab_leaks

from forge_ci.cli import main
from tests.deploy import phpdotenv

EVIL = "a b'c\"d$(touch PWNED)`touch PWNED2`;touch PWNED3"


def test_hostile_paths_are_data_not_shell(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.html").write_text("ok\n")
    (src / "forge.yml").write_text(
        "version: 1\nproject: p\nbuild: {exclude: ['t*']}\nenvironments:\n  local:\n"
        f"    path: '../t {EVIL.replace(chr(39), chr(39) * 2)}'\n"
        f"    shared: ['web/{EVIL.replace(chr(39), chr(39) * 2)}']\n"
        # A backtick and a quote in one .env value cannot be written (forge_ci.deploy.dotenv).
        f"    dotenv: {{ X: '{EVIL.replace(chr(39), '')}' }}\n")
    env = {"PATH": os.environ["PATH"]}
    os.chdir(tmp_path)
    for _ in range(2):
        assert main(["deploy", "local", "--config", str(src / "forge.yml")], env=env) == 0
    assert not list(tmp_path.rglob("PWNED*"))
    target = tmp_path / f"t {EVIL}"
    assert (target / "current" / "web" / EVIL).is_symlink()
    assert phpdotenv.parse((target / "current/.env").read_text())["X"].value == \
        EVIL.replace("'", "")


def test_secrets_never_reach_output_summary_or_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Random, so a copy of this file elsewhere (e2e copies the repository) shows neither.
    secret = f"S3cr3t-DB-pass-{secrets.token_hex(4)}"
    key = (f"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAfakekeymaterial{secrets.token_hex(4)}\n"
           "-----END OPENSSH PRIVATE KEY-----")
    src = tmp_path / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.html").write_text("ok\n")
    (src / "forge.yml").write_text(
        "version: 1\nproject: p\nbuild: {exclude: [target]}\nenvironments:\n  local:\n"
        "    path: ../target\n    dotenv: { DB_PASSWORD: '${DB_PASSWORD}' }\n"
        "    hooks: { after_switch: ['cat .env'] }\n"
        "  prod:\n    hosts: [{host: 127.0.0.1, port: 1}]\n    path: /srv/x\n"
        "    url: 'https://example.com/${DB_PASSWORD}'\n")
    out_file, summary = tmp_path / "out", tmp_path / "summary"
    lab_leaks.register(secret)
    lab_leaks.register(key)
    lab_leaks.deploy_target(tmp_path / "target")  # each release's .env holds DB_PASSWORD
    env = {"PATH": os.environ["PATH"], "DB_PASSWORD": secret, "FORGE_SSH_KEY": key,
           "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_ACTIONS": "true"}
    cfg = ["--config", str(src / "forge.yml")]
    results = [main(["deploy", "local", *cfg], env=env),
               main(["deploy", "local", "--json", *cfg], env=env),
               main(["releases", "local", "--json", *cfg], env=env),
               main(["rollback", "local", *cfg], env=env),
               main(["deploy", "prod", *cfg], env=env)]
    assert results[:4] == [0, 0, 0, 0] and results[4] != 0
    captured = capsys.readouterr()
    everything = captured.out + captured.err + out_file.read_text() + summary.read_text()
    assert "::add-mask::" + secret in captured.out  # masked before anything could print it
    # The runner swallows ::add-mask:: lines; everything else reaches the log.
    leaks = "\n".join(x for x in everything.splitlines() if not x.startswith("::add-mask::"))
    assert secret not in leaks
    assert "fakekeymaterial" not in leaks
