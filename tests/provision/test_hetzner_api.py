"""Reconciling against the fake Hetzner API: plan without writes, idempotency,
fallbacks, retried creates, rate limits, tokens, destroy guards.

These runs stop after the API work (``--no-wait`` or ``--plan``); the SSH side is
in test_provision.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab.hetzner import HetznerFake

from forge_ci.errors import ExitCode
from forge_ci.provision.base import forge_labels
from forge_ci.provision.errors import ProviderUnavailable, ProvisionTimeout
from forge_ci.provision.hetzner.api import Api, make_client
from forge_ci.provision.policy import ProvisionPolicy
from tests.provision.conftest import SERVER, Repo, Result

Run = Callable[..., Result]
OWN = forge_labels("example-site", "production")


def test_plan_lists_changes_and_writes_nothing(repo: Repo, run: Run) -> None:
    result = run("provision", "production", "--plan", "--json")
    assert result.code == 0, result.stderr
    changes = [(c["action"], c["kind"]) for c in result.json["plan"]["changes"]]
    assert changes == [("create", "ssh_key"), ("create", "firewall"), ("create", "server")]
    assert repo.fake.writes() == []
    assert result.json["applied"] is False
    assert "ip" not in result.outputs and "known-hosts" not in result.outputs
    human = run("provision", "production", "--dry-run")
    assert "+ create server example-site-production" in human.stdout
    assert "plan only: nothing was changed" in human.stdout
    assert repo.fake.writes() == []


def test_no_wait_creates_once_and_a_second_run_creates_nothing(repo: Repo, run: Run) -> None:
    first = run("provision", "production", "--no-wait", "--json")
    assert first.code == 0, first.stderr
    assert first.json["host_key"] == "first-boot"
    assert first.outputs["ip"] == "127.0.0.2"
    assert repo.fake.count("POST", "/servers") == 1
    writes = len(repo.fake.writes())
    second = run("provision", "production", "--no-wait", "--json")
    assert second.code == 0
    assert len(repo.fake.writes()) == writes
    assert second.json["plan"]["changes"] == []
    assert second.outputs["ip"] == "127.0.0.2"
    # Another environment is another server, but the same SSH key.
    staging = run("provision", "staging", "--no-wait")
    assert staging.code == 0
    assert repo.fake.server("example-site-staging") is not None
    assert repo.fake.count("POST", "/ssh_keys") == 1


def test_existing_key_is_found_by_fingerprint_whatever_its_name(repo: Repo, run: Run) -> None:
    from hcloud import Client

    Client(repo.fake.token, api_endpoint=repo.fake.url).ssh_keys.create(
        name="alice's laptop", public_key=repo.key.public)
    result = run("provision", "production", "--no-wait")
    assert result.code == 0, result.stderr
    assert repo.fake.count("POST", "/ssh_keys") == 1  # only ours, above


def test_resource_unavailable_falls_back_in_order(repo: Repo, run: Run) -> None:
    repo.fake.make_unavailable("fsn1")
    repo.fake.make_unavailable("nbg1", "cx22")
    result = run("provision", "production", "--no-wait", "--json")
    assert result.code == 0, result.stderr
    server = result.json["server"]
    assert (server["server_type"], server["location"]) == ("cx22", "hel1")
    tried = [(c.body["server_type"], c.body["location"], c.status)
             for c in repo.fake.calls if c.method == "POST" and c.path == "/servers"]
    assert tried == [("cx22", "fsn1", 412), ("cx22", "nbg1", 412), ("cx22", "hel1", 201)]
    assert "cx22@fsn1 was unavailable" in result.json["notes"]


def test_advertised_unavailability_is_skipped_by_the_plan(repo: Repo, run: Run) -> None:
    for loc in ("fsn1", "nbg1", "hel1"):
        repo.fake.make_unavailable(loc, "cx22", advertised=True)
    result = run("provision", "production", "--no-wait", "--json")
    assert result.code == 0, result.stderr
    assert result.json["server"]["server_type"] == "cx32"
    assert repo.fake.count("POST", "/servers") == 1


def test_no_capacity_anywhere_fails_clearly(repo: Repo, run: Run) -> None:
    for loc in ("fsn1", "nbg1", "hel1"):
        repo.fake.make_unavailable(loc)
    result = run("provision", "production", "--no-wait")
    assert result.code == ExitCode.FAILED
    assert "no capacity for server example-site-production" in result.stdout
    assert "cx32@hel1" in result.stdout
    assert repo.fake.server(SERVER) is None


def test_retried_create_adopts_the_server_it_made(repo: Repo, run: Run) -> None:
    repo.fake.fail_creates_after_commit(1)  # created, but the answer is a 504
    result = run("provision", "production", "--no-wait", "--json")
    assert result.code == 0, result.stderr
    statuses = [c.status for c in repo.fake.calls if c.method == "POST" and c.path == "/servers"]
    assert statuses == [504, 409]
    assert len(repo.fake.servers) == 1
    assert any("adopted" in n for n in result.json["notes"])
    # Same user data, so the first-boot key output is the one the server got.
    assert result.json["host_key"] == "first-boot"
    assert result.outputs["known-hosts"].split()[2] in repo.fake.user_data[SERVER]


def test_a_server_appearing_without_forge_labels_is_not_adopted(repo: Repo, run: Run) -> None:
    repo.fake.race_create({"owner": "someone-else"})
    result = run("provision", "production", "--no-wait")
    assert result.code == ExitCode.FAILED
    assert "taken by a server forge did not make" in result.stdout
    foreign = repo.fake.server(SERVER)
    assert foreign is not None and foreign["labels"] == {"owner": "someone-else"}
    assert "ip" not in result.outputs


def test_a_server_appearing_with_forge_labels_is_adopted(repo: Repo, run: Run) -> None:
    repo.fake.race_create(OWN)
    result = run("provision", "production", "--no-wait")
    assert result.code == 0, result.stderr
    assert len(repo.fake.servers) == 1


def test_existing_foreign_server_stops_before_any_write(repo: Repo, run: Run) -> None:
    repo.fake.add_server(SERVER, {"team": "web"})
    result = run("provision", "production", "--plan")
    assert result.code == ExitCode.FAILED
    assert "does not carry forge's labels" in result.stdout
    assert repo.fake.writes() == []


def test_drift_is_repaired_labels_and_firewall(repo: Repo, run: Run) -> None:
    server = repo.fake.add_server(SERVER, dict(OWN))  # made by forge, before labels/firewall
    fw = repo.fake.add_firewall(SERVER, dict(OWN))
    result = run("provision", "production", "--no-wait", "--json")
    assert result.code == 0, result.stderr
    changes = [(c["action"], c["kind"]) for c in result.json["plan"]["changes"]]
    assert changes == [("update", "firewall"), ("attach", "firewall"), ("update", "server")]
    assert repo.fake.servers[server["id"]]["labels"]["team"] == "web"
    assert fw["applied_to"] == [{"type": "server", "server": {"id": server["id"]}}]
    assert {r["port"] for r in fw["rules"]} == {None, "80", "443", str(repo.port)}
    assert repo.fake.count("POST", "/servers") == 0
    # An existing server was not booted by this run: no key is claimed for it.
    assert result.json["host_key"] == "unknown" and "known-hosts" not in result.outputs


def test_rate_limit_is_retried(repo: Repo, run: Run) -> None:
    repo.fake.rate_limit(2)
    result = run("provision", "production", "--no-wait")
    assert result.code == 0, result.stderr
    assert [c.status for c in repo.fake.calls[:3]] == [429, 429, 200]


def test_missing_token_is_a_secret_error_before_any_call(repo: Repo, run: Run) -> None:
    result = run("provision", "production", env={"HCLOUD_TOKEN": ""})
    assert result.code == ExitCode.USAGE
    assert "HCLOUD_TOKEN is not set" in result.stdout
    assert repo.fake.calls == []


def test_wrong_token_is_refused_clearly(repo: Repo, run: Run) -> None:
    result = run("provision", "production", "--plan", env={"HCLOUD_TOKEN": "not-the-token"})
    assert result.code == ExitCode.USAGE
    assert "the Hetzner API refused HCLOUD_TOKEN" in result.stdout
    assert [c.status for c in repo.fake.calls] == [401]  # never retried


def test_missing_ssh_key_is_a_secret_error(repo: Repo, run: Run) -> None:
    result = run("provision", "production", env={"FORGE_SSH_KEY": ""})
    assert result.code == ExitCode.USAGE and "FORGE_SSH_KEY is not set" in result.stdout


def test_unknown_environment_and_missing_section_are_config_errors(repo: Repo, run: Run) -> None:
    result = run("provision", "prod")
    assert result.code == ExitCode.USAGE and "no environment 'prod'" in result.stdout
    text = repo.config.read_text()
    repo.config.write_text(text[: text.index("provision:")])
    result = run("provision", "production")
    assert result.code == ExitCode.USAGE and "no provision: section" in result.stdout


# -- destroy -------------------------------------------------------------------------


def test_destroy_needs_the_exact_name_before_any_call(repo: Repo, run: Run) -> None:
    assert run("provision", "production", "--no-wait").code == 0
    before = len(repo.fake.calls)
    wrong = (["--confirm", "example-site-staging"], [], ["--confirm", SERVER.upper()])
    for argv in wrong:
        result = run("destroy", "production", *argv)
        assert result.code == ExitCode.USAGE
        assert f"pass --confirm {SERVER}" in result.stdout
    assert len(repo.fake.calls) == before
    assert repo.fake.server(SERVER) is not None


def test_destroy_deletes_server_and_firewall(repo: Repo, run: Run) -> None:
    assert run("provision", "production", "--no-wait").code == 0
    dry = run("destroy", "production", "--dry-run")
    assert dry.code == 0 and "- delete server example-site-production" in dry.stdout
    assert repo.fake.count("DELETE", f"/servers/{repo.fake.server(SERVER)['id']}") == 0  # type: ignore[index]
    result = run("destroy", "production", "--confirm", SERVER, "--json")
    assert result.code == 0, result.stderr
    assert result.json["destroyed"] is True
    assert repo.fake.server(SERVER) is None and repo.fake.firewall(SERVER) is None
    assert len(repo.fake.ssh_keys) == 1  # the key may serve other servers: kept
    again = run("destroy", "production", "--confirm", SERVER)
    assert again.code == 0 and "nothing to destroy" in again.stdout


@pytest.mark.parametrize("labels", [{}, {**OWN, "forge-environment": "staging"},
                                    {"managed-by": "someone"}])
def test_destroy_never_touches_a_server_without_forge_labels(repo: Repo, run: Run,
                                                             labels: dict[str, str]) -> None:
    repo.fake.add_server(SERVER, labels)
    result = run("destroy", "production", "--confirm", SERVER)
    assert result.code == ExitCode.FAILED
    assert "forge destroys only servers it made" in result.stdout
    assert [c for c in repo.fake.writes()] == []
    assert repo.fake.server(SERVER) is not None


# -- the Api door: backoff and polling, with a clock the test owns --------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.5)

    def __call__(self) -> float:
        return self.now


def api_for(fake: HetznerFake, clock: Clock, **policy: float) -> Api:
    settings = {"poll_interval": 2.0, "action_timeout": 60.0, "api_retries": 3,
                "api_backoff": 1.0, **policy}
    return Api(make_client(fake.token, fake.url),
               ProvisionPolicy(**settings, sleep=clock.sleep, clock=clock),  # type: ignore[arg-type]
               endpoint=fake.url)


def test_rate_limit_backs_off_exponentially_then_gives_up(fake: HetznerFake) -> None:
    clock = Clock()
    api = api_for(fake, clock)
    fake.rate_limit(2)
    assert api.call("listing locations", api.client.locations.get_all)
    assert clock.sleeps == [1.0, 2.0]
    fake.rate_limit(10)
    with pytest.raises(ProviderUnavailable, match="kept rate-limiting"):
        api.call("listing locations", api.client.locations.get_all)
    assert clock.sleeps[2:] == [1.0, 2.0, 4.0]  # 3 retries, then the error


def test_actions_are_polled_until_a_time_limit(fake: HetznerFake) -> None:
    clock = Clock()
    api = api_for(fake, clock)
    fake.action_polls = 3
    action = fake.new_action("create_server")
    bound = api.client.actions.get_by_id(action["id"])
    api.wait([bound], "creating")
    assert clock.sleeps == [2.0] * 3  # get_by_id above was the first look
    fake.action_polls = 10**6
    stuck = api.client.actions.get_by_id(fake.new_action("create_server")["id"])
    with pytest.raises(ProvisionTimeout, match="still running after 60s"):
        api.wait([stuck], "creating")


def test_unreachable_api_is_retried_then_reported(fake: HetznerFake) -> None:
    clock = Clock()
    url = fake.url
    fake.stop()
    policy = ProvisionPolicy(api_retries=2, api_backoff=0.0, sleep=clock.sleep, clock=clock)
    api = Api(make_client(fake.token, url), policy, endpoint=url)
    with pytest.raises(ProviderUnavailable, match="cannot reach the Hetzner API"):
        api.call("listing locations", api.client.locations.get_all)
    assert len(clock.sleeps) == 2


def test_a_server_that_never_answers_ssh_times_out_with_a_hint(repo: Repo, run: Run) -> None:
    text = repo.config.read_text().replace("boot_timeout: 30", "boot_timeout: 0.3")
    repo.config.write_text(text)
    result = run("provision", "production")  # nothing boots: no sshd behind the address
    assert result.code == ExitCode.FAILED
    assert "did not accept SSH in time" in result.stdout
    assert "provision.ssh_sources" in result.stdout
    assert repo.fake.server(SERVER) is not None  # the API work stands; a re-run continues
