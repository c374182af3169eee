"""The sync action's inputs become one forge-ci argv, checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_ci import actions


def _plan(**inputs: str) -> list[list[str]]:
    environ = {f"INPUT_{k.upper()}": v for k, v in inputs.items()}
    environ.setdefault("INPUT_WORKING_DIRECTORY", str(Path.cwd()))
    return actions.plan("sync", environ)[1]


def test_inputs_become_the_sync_argv() -> None:
    assert _plan(environment="staging", **{"from": "production"}) == [
        ["sync", "production", "staging", "--config=forge.yml"]]
    assert _plan(environment="production", confirm="production", parts="database",
                 snapshot="latest", dry_run="true", **{"from": "staging"}) == [
        ["sync", "staging", "production", "--config=forge.yml", "--database",
         "--snapshot=latest", "--confirm=production", "--dry-run"]]


@pytest.mark.parametrize("inputs, message", [
    ({"environment": "staging"}, "'from'"),
    ({"environment": "staging", "from": "production; rm -rf /"}, "'from'"),
    ({"environment": "staging", "from": "production", "parts": "files"}, "'parts'"),
    ({"environment": "production", "from": "staging", "confirm": "staging"}, "'confirm'"),
])
def test_bad_inputs_are_refused(inputs: dict[str, str], message: str) -> None:
    with pytest.raises(actions.InputError, match=message):
        _plan(**inputs)
