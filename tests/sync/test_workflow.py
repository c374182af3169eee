"""sync.yml and actions/sync: the house rules for workflows, as data."""

from __future__ import annotations

from tests.actions._files import action, reusable, steps_of


def test_sync_workflow_runs_in_the_targets_environment_and_deploy_queue() -> None:
    wf = reusable("sync")
    assert set(wf["on"]) == {"workflow_call", "workflow_dispatch"}
    assert wf["permissions"] == {}
    job = wf["jobs"]["sync"]
    assert job["environment"] == {"name": "${{ inputs.to }}"}
    assert job["concurrency"] == {"group": "forge-deploy-${{ inputs.to }}",
                                  "cancel-in-progress": False}
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    step = next(s for s in steps_of(wf) if s.get("id") == "forge")
    assert step["uses"].startswith("org/forge/actions/sync@")
    declared = set(wf["on"]["workflow_call"]["secrets"])
    used = {name.strip().removeprefix("secrets.")
            for v in step["env"].values() if "secrets." in v
            for name in v.removeprefix("${{").removesuffix("}}").split("||")}
    assert used == declared


def test_sync_action_passes_inputs_through_env_only() -> None:
    doc = action("sync")
    (step,) = list(steps_of(doc))
    assert "${{" not in step["run"]
    assert step["run"].rstrip("'").endswith(" sync")
    assert {k.removeprefix("INPUT_").lower().replace("_", "-") for k in step["env"]} == set(
        doc["inputs"])
