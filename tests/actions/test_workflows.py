"""Structure of every workflow and action file: the house conventions as data.

These run in milliseconds and catch what a linter does not know is a rule here:
no expression inside ``run:``, ``permissions: {}`` first, one concurrency queue
per environment for deploy and rollback, named secrets, outputs wired through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from forge_ci import actions as entry

from ._files import (
    ACTIONS,
    FORGE_USES,
    REPO,
    REUSABLE,
    SHA_PIN,
    action,
    action_files,
    load,
    reusable,
    steps_of,
    workflow_files,
)

ALL_FILES = workflow_files() + action_files()
SECRETS = {
    "deploy": {"ssh-key", "known-hosts", "env"},
    "rollback": {"ssh-key", "known-hosts", "env"},
    "backup": {"ssh-key", "known-hosts", "backup-recipient", "backup-signing-key",
               "backup-identity", "aws-access-key-id", "aws-secret-access-key", "env"},
    "restore": {"ssh-key", "known-hosts", "backup-identity", "aws-access-key-id",
                "aws-secret-access-key", "env"},
    "provision": {"hcloud-token", "ssh-key", "known-hosts", "admin-ssh-key", "env"},
    "monitor": {"ssh-key", "known-hosts", "aws-access-key-id", "aws-secret-access-key", "env"},
    "drill": {"ssh-key", "known-hosts", "backup-identity", "aws-access-key-id",
              "aws-secret-access-key", "env"},
}
# Which variable each named secret becomes in the forge step's environment.
SECRET_ENV = {
    "ssh-key": "FORGE_SSH_KEY",
    "known-hosts": "FORGE_KNOWN_HOSTS",
    "backup-recipient": "FORGE_BACKUP_RECIPIENT",
    "backup-signing-key": "FORGE_BACKUP_SIGNING_KEY",
    "backup-identity": "FORGE_BACKUP_IDENTITY",
    "hcloud-token": "HCLOUD_TOKEN",
    "admin-ssh-key": "FORGE_ADMIN_SSH_KEY",
    "aws-access-key-id": "AWS_ACCESS_KEY_ID",
    "aws-secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "env": "FORGE_ENV",
}
OUTPUTS = {
    "deploy": {"release-id", "previous-release-id", "url"},
    "rollback": {"release-id", "previous-release-id", "url"},
    "backup": {"snapshot-id"},
    "restore": set(),
    "provision": {"ip", "known-hosts"},
    "monitor": {"severity"},
    "drill": set(),
}
OWN_INPUTS = {
    "deploy": {"artifact"},
    "rollback": {"release"},
    "backup": {"verify", "prune"},
    "restore": {"snapshot", "confirm"},
    "provision": {"no-wait"},
    "monitor": {"state", "last-activity", "fail-on"},
    "drill": set(),
}
CONCURRENCY = {
    "deploy": "forge-deploy-${{ inputs.environment }}",
    "rollback": "forge-deploy-${{ inputs.environment }}",
    "restore": "forge-deploy-${{ inputs.environment }}",
    "backup": "forge-backup-${{ inputs.environment }}",
    "provision": "forge-provision-${{ inputs.environment }}",
    "monitor": "forge-monitor-${{ inputs.environment }}",
    "drill": "forge-drill-${{ inputs.environment }}",
}
PERMISSIONS = {
    "deploy": {"contents": "read"},
    "rollback": {"contents": "read"},
    "provision": {"contents": "read"},
    "backup": {"contents": "read", "id-token": "write"},
    "restore": {"contents": "read", "id-token": "write"},
    "monitor": {"contents": "read", "id-token": "write"},
    "drill": {"contents": "read", "id-token": "write"},
}


def _id(p: Path) -> str:
    return str(p.relative_to(REPO))


def _only_job(doc: Any) -> tuple[str, dict[str, Any]]:
    jobs = doc["jobs"]
    assert len(jobs) == 1, "a reusable workflow here has one job"
    return next(iter(jobs.items()))


def _forge_step(doc: Any) -> dict[str, Any]:
    found = [s for s in steps_of(doc) if s.get("id") == "forge"]
    assert len(found) == 1, "exactly one step with id 'forge'"
    return found[0]


# -- every file ------------------------------------------------------------------

@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_no_expression_inside_run(path: Path) -> None:
    for step in steps_of(load(path)):
        if "run" in step:
            assert "${{" not in step["run"], f"{step.get('name') or step['run']!r}: " \
                "pass values through env:, never ${{ }} inside run:"


@pytest.mark.parametrize("path", workflow_files(), ids=_id)
def test_workflow_starts_from_no_permissions(path: Path) -> None:
    doc = load(path)
    assert doc.get("permissions") == {}, "top-level `permissions: {}`"
    for name, job in doc["jobs"].items():
        assert "permissions" in job, f"job {name}: say which permissions it needs"
        assert job["permissions"] != "write-all" and job["permissions"] != "read-all"


@pytest.mark.parametrize("path", workflow_files(), ids=_id)
def test_third_party_uses_are_pinned_by_sha(path: Path) -> None:
    for step in steps_of(load(path)):
        uses = step.get("uses")
        if not uses or uses.startswith("./") or FORGE_USES.match(uses):
            continue
        assert SHA_PIN.match(uses), f"{uses}: pin by full commit SHA"
        if uses.startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False


@pytest.mark.parametrize("path", workflow_files(), ids=_id)
def test_secrets_never_inherited(path: Path) -> None:
    for name, job in load(path)["jobs"].items():
        assert job.get("secrets") != "inherit", f"job {name}: name the secrets it passes"


# -- composite actions --------------------------------------------------------------

@pytest.mark.parametrize("name", ACTIONS)
def test_action_is_composite_without_any_uses(name: str) -> None:
    doc = action(name)
    assert doc["runs"]["using"] == "composite"
    for step in doc["runs"]["steps"]:
        assert "uses" not in step, "no action inside forge's actions, first-party or not"
        assert step.get("shell") == "bash"
    assert (REPO / "actions" / name / "README.md").is_file()


@pytest.mark.parametrize("name", ACTIONS)
def test_action_inputs_reach_python_through_env(name: str) -> None:
    doc = action(name)
    inputs = set(doc["inputs"])
    assert inputs == {"environment", "config", "working-directory"} | OWN_INPUTS[name]
    assert doc["inputs"]["environment"]["required"] is True
    assert doc["inputs"]["config"]["default"] == "forge.yml"
    step = _forge_step(doc)
    expected = {f"INPUT_{i.upper().replace('-', '_')}": f"${{{{ inputs.{i} }}}}" for i in inputs}
    assert step["env"] == expected
    assert step["run"].endswith(f'/_setup/run.py" {name}\'') or \
        step["run"].endswith(f'/_setup/run.py" {name}')
    assert name in entry.ACTIONS


@pytest.mark.parametrize("name", ACTIONS)
def test_action_outputs_come_from_the_forge_step(name: str) -> None:
    doc = action(name)
    outputs = doc.get("outputs") or {}
    assert set(outputs) == OUTPUTS[name]
    for out, spec in outputs.items():
        assert spec["value"] == f"${{{{ steps.forge.outputs.{out} }}}}"
        assert spec["description"]


@pytest.mark.parametrize("name", ACTIONS)
def test_action_readme_documents_every_input_and_output(name: str) -> None:
    text = (REPO / "actions" / name / "README.md").read_text(encoding="utf-8")
    doc = action(name)
    for key in [*doc["inputs"], *(doc.get("outputs") or {})]:
        assert f"`{key}`" in text, f"README of {name} does not mention `{key}`"
    assert "permissions" in text.lower()
    assert f"org/forge/actions/{name}@v1" in text


# -- reusable workflows -------------------------------------------------------------

@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_inputs(name: str) -> None:
    call = reusable(name)["on"]["workflow_call"]
    inputs = call["inputs"]
    assert inputs["environment"] == {**inputs["environment"], "type": "string",
                                     "required": True}
    assert inputs["config"]["default"] == "forge.yml"
    assert inputs["runs-on"]["default"] == "ubuntu-latest"
    if name == "rollback":
        assert "release" in inputs
    if name == "restore":
        assert {"snapshot", "confirm"} <= set(inputs)
        assert inputs["confirm"]["required"] is True
    if name in ("backup", "restore", "monitor", "drill"):
        assert "aws-role-arn" in inputs


@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_secrets_are_named_exactly(name: str) -> None:
    call = reusable(name)["on"]["workflow_call"]
    assert set(call["secrets"]) == SECRETS[name]
    env = _forge_step(reusable(name))["env"]
    for secret in SECRETS[name]:
        assert env[SECRET_ENV[secret]] == f"${{{{ secrets.{secret} }}}}"
    # and no secret reaches the step any other way
    assert not [v for k, v in env.items()
                if "secrets." in str(v) and k not in SECRET_ENV.values()]


@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_job_environment_concurrency_permissions(name: str) -> None:
    doc = reusable(name)
    assert doc["permissions"] == {}
    assert "concurrency" not in doc, "concurrency on the job, not the whole workflow"
    _, job = _only_job(doc)
    env = job["environment"]
    env_name = env["name"] if isinstance(env, dict) else env
    assert env_name == "${{ inputs.environment }}"
    assert job["runs-on"] == "${{ inputs.runs-on }}"
    assert job["concurrency"] == {"group": CONCURRENCY[name], "cancel-in-progress": False}
    assert job["permissions"] == PERMISSIONS[name]
    assert isinstance(job.get("timeout-minutes"), int)


def test_deploy_and_rollback_share_one_queue_and_backup_has_its_own() -> None:
    group = {n: _only_job(reusable(n))[1]["concurrency"]["group"] for n in REUSABLE}
    assert group["deploy"] == group["rollback"] == group["restore"]
    assert group["backup"] not in (group["deploy"], group["provision"])


@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_outputs_are_wired_from_the_action(name: str) -> None:
    doc = reusable(name)
    job_id, job = _only_job(doc)
    outputs = doc["on"]["workflow_call"].get("outputs") or {}
    assert set(outputs) == OUTPUTS[name]
    for out, spec in outputs.items():
        assert spec["value"] == f"${{{{ jobs.{job_id}.outputs.{out} }}}}"
        assert job["outputs"][out] == f"${{{{ steps.forge.outputs.{out} }}}}"
    step = _forge_step(doc)
    m = FORGE_USES.match(step["uses"])
    assert m and m["path"] == f"actions/{name}"
    with_ = step["with"]
    assert with_["environment"] == "${{ inputs.environment }}"
    assert set(with_) <= set(action(name)["inputs"])
    for required, spec in action(name)["inputs"].items():
        if spec.get("required"):
            assert required in with_


def test_reusable_workflows_use_forge_actions_at_one_ref() -> None:
    """Same-commit pinning: every forge ref in the reusable workflows is one ref,
    `main` on the main branch, stamped to the release tag by scripts/release."""
    refs = set()
    for name in REUSABLE:
        for step in steps_of(reusable(name)):
            m = FORGE_USES.match(step.get("uses", ""))
            if m:
                refs.add(m["ref"])
    assert len(refs) == 1, f"forge refs disagree: {sorted(refs)}"
    assert refs <= {"main"} or all(re.fullmatch(r"v\d+\.\d+\.\d+", r) for r in refs)


def test_ci_runs_the_test_entry_point() -> None:
    doc = load(REPO / ".github" / "workflows" / "ci.yml")
    runs = [s["run"] for s in steps_of(doc) if "run" in s]
    assert any(".ci/run" in r for r in runs)
    for job in doc["jobs"].values():
        assert job["permissions"] == {"contents": "read"}


# -- consumer examples --------------------------------------------------------------

def _examples() -> dict[str, Any]:
    return {p.stem: load(p) for p in (REPO / "examples" / "workflows").glob("*.yml")}


def test_examples_cover_every_everyday_use() -> None:
    ex = _examples()
    assert ex["deploy"]["on"]["push"]["branches"] == ["main"]
    cron = ex["backup"]["on"]["schedule"][0]["cron"]
    assert cron.split()[0] not in ("0", "*"), "spread load: not on the hour"
    for name in ("rollback", "restore", "provision"):
        assert "workflow_dispatch" in ex[name]["on"]
        assert ex[name]["on"]["workflow_dispatch"]["inputs"]["environment"]["type"] == "choice"
    assert "release" in ex["rollback"]["on"]["workflow_dispatch"]["inputs"]
    assert {"snapshot", "confirm"} <= set(ex["restore"]["on"]["workflow_dispatch"]["inputs"])


def test_examples_call_forge_at_v1_with_named_secrets() -> None:
    for stem, doc in _examples().items():
        for job in doc["jobs"].values():
            uses = job.get("uses")
            if uses:
                m = FORGE_USES.match(uses)
                assert m and m["ref"] == "v1", f"{stem}: {uses}"
                name = Path(m["path"]).stem
                assert set(job.get("secrets", {})) <= SECRETS[name]
                assert set(job.get("with", {})) <= set(
                    reusable(name)["on"]["workflow_call"]["inputs"])
            for step in job.get("steps", []):
                m = FORGE_USES.match(step.get("uses", ""))
                if m:
                    assert m["ref"] == "v1"
    assert (REPO / "examples" / "workflows" / "README.md").is_file()


@pytest.mark.parametrize("name", [n for n in REUSABLE if n != "provision"])
def test_examples_grant_what_the_called_workflow_asks(name: str) -> None:
    # A called job may not ask for more than its caller grants (id-token for OIDC).
    job = next(j for j in _examples()[name]["jobs"].values() if j.get("uses"))
    assert job["permissions"] == PERMISSIONS[name]
