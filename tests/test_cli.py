"""The command line loads only the capability a verb belongs to."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from forge_ci import cli


def _verbs(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


@pytest.mark.parametrize("verb", sorted(cli._VERB_MODULES))
def test_each_verb_is_registered_by_the_module_named_for_it(verb: str) -> None:
    assert verb in _verbs(cli.build_parser(verb))


def test_every_registered_verb_is_known_or_still_reachable() -> None:
    every = _verbs(cli.build_parser())
    assert set(cli._VERB_MODULES) == every  # a new verb goes in the table
    # A verb missing from the table still works: every module is loaded for it.
    assert _verbs(cli.build_parser("no-such-verb")) == every


def test_a_deploy_does_not_import_the_s3_client() -> None:
    code = ("import sys; from forge_ci import cli; cli.build_parser(cli._command_word("
            "['--config', 'x.yml', 'deploy', 'production'])); "
            "print('boto3' in sys.modules, 'forge_ci.backup.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_a_deploy_loads_no_backup_code_without_a_backup_store() -> None:
    # The safety net and the signer keys load their backup modules when used.
    code = ("import sys; from forge_ci import cli; cli.build_parser('deploy'); "
            "from forge_ci.config import parse; "
            "parse('version: 1\\nproject: p\\nenvironments:\\n  production:\\n    path: /srv\\n"
            "    hosts: [{host: 127.0.0.1}]\\n', {}); "
            "print(sorted(m for m in sys.modules if m.startswith('forge_ci.backup')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize(("text", "code"), [
    ("version: 1\nproject: p\nenvironments:\n  production: {path: site}\n", 0),
    ("version: 1\nproject: p\nenvironments:\n  production: {path: site, typo: 1}\n", 2),
])
def test_the_program_exits_with_its_code_and_all_its_output_through_a_pipe(
        tmp_path: Path, text: str, code: int) -> None:
    config = tmp_path / "forge.yml"
    config.write_text(text)
    r = subprocess.run([sys.executable, "-m", "forge_ci", "--config", str(config), "config",
                        "check", "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == code, r.stderr
    assert json.loads(r.stdout)["ok"] is (code == 0)
