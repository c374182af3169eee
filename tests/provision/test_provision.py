"""forge-ci provision against the fake Hetzner API, with servers that really boot:
an sshd on the server's address with the host key from its user data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from forge_ci.errors import ExitCode
from forge_ci.provision.hostkeys import generate_host_key
from tests.provision.conftest import SERVER, Repo, Result
from tests.provision.server import Booter, presented_key

pytestmark = pytest.mark.lab
Run = Callable[..., Result]


def first_boot_public(repo: Repo) -> str:
    return str(yaml.safe_load(repo.fake.user_data[SERVER])["ssh_keys"]["ed25519_public"])


def test_provision_creates_boots_and_rotates_the_host_key(repo: Repo, run: Run,
                                                          booter: Booter) -> None:
    result = run("provision", "production", "--json")
    assert result.code == 0, result.stderr
    data = result.json
    lab = booter.servers[SERVER]
    assert data["ip"] == lab.address and lab.address.startswith("127.0.0.")
    assert data["host_key"] == "rotated" and data["cloud_init"] == "done"

    # known-hosts names the new key, and it is what sshd presents now — not the first-boot key.
    line = result.outputs["known-hosts"]
    assert line == data["known_hosts"]
    assert line.startswith(f"[{lab.address}]:{repo.port} ssh-ed25519 ")
    presented = presented_key(lab.address, repo.port)
    assert line.split(" ", 1)[1] == presented == lab.public_key_on_disk()
    assert presented != " ".join(first_boot_public(repo).split()[:2])
    assert not lab.marker.exists()
    assert result.outputs["ip"] == lab.address

    # One of each, created in order: key, firewall (before the server), server.
    writes = [(c.method, c.path) for c in repo.fake.writes()]
    assert writes == [("POST", "/ssh_keys"), ("POST", "/firewalls"), ("POST", "/servers")]
    server = repo.fake.server(SERVER)
    assert server is not None
    assert server["labels"] == {"team": "web", "managed-by": "forge-ci",
                                "forge-project": "example-site", "forge-environment": "production"}
    fw = repo.fake.firewall(SERVER)
    assert fw is not None
    assert fw["applied_to"] == [{"type": "server", "server": {"id": server["id"]}}]
    rules = {(r["protocol"], r["port"]): sorted(r["source_ips"]) for r in fw["rules"]}
    assert rules[("tcp", "80")] == rules[("tcp", "443")] == ["0.0.0.0/0", "::/0"]
    assert rules[("tcp", str(repo.port))] == ["2001:db8::/32", "203.0.113.0/24"]
    assert "Provisioned" in result.summary and line in result.summary


def test_second_run_creates_nothing_and_confirms_the_pinned_key(repo: Repo, run: Run,
                                                                booter: Booter) -> None:
    first = run("provision", "production")
    assert first.code == 0, first.stderr
    writes = len(repo.fake.writes())
    again = run("provision", "production", "--json",
                env={"FORGE_KNOWN_HOSTS": first.outputs["known-hosts"]})
    assert again.code == 0, again.stderr
    assert len(repo.fake.writes()) == writes  # no POST, PUT or DELETE at all
    data = again.json
    assert data["plan"]["changes"] == []
    assert data["host_key"] == "pinned"
    assert again.outputs["known-hosts"] == first.outputs["known-hosts"]


def test_second_run_without_known_hosts_warns_and_outputs_only_the_ip(repo: Repo, run: Run,
                                                                      booter: Booter) -> None:
    assert run("provision", "production").code == 0
    again = run("provision", "production")
    assert again.code == 0
    assert "known-hosts" not in again.outputs and again.outputs["ip"].startswith("127.0.0.")
    assert "FORGE_KNOWN_HOSTS is not set" in again.stdout + again.stderr


def test_no_wait_outputs_the_first_boot_key_then_a_later_run_rotates_it(
        repo: Repo, run: Run, booter: Booter) -> None:
    result = run("provision", "production", "--no-wait")
    assert result.code == 0, result.stderr
    lab = booter.servers[SERVER]
    line = result.outputs["known-hosts"]
    # Exactly the key forge put into user data, which is what sshd presents on first boot.
    assert line == f"[{lab.address}]:{repo.port} {first_boot_public(repo)}"
    assert line.split(" ", 1)[1] == presented_key(lab.address, repo.port)
    assert lab.marker.exists()  # nobody logged in: still the first-boot key
    assert "first-boot host key" in result.stdout  # the ::warning:: line

    later = run("provision", "production", env={"FORGE_KNOWN_HOSTS": line})
    assert later.code == 0, later.stderr
    assert later.outputs["known-hosts"] != line
    assert later.outputs["known-hosts"].split(" ", 1)[1] == presented_key(lab.address, repo.port)


def test_degraded_cloud_init_is_a_warning(repo: Repo, run: Run, booter: Booter) -> None:
    booter.cloud_init_exit = 2
    result = run("provision", "production")
    assert result.code == 0, result.stderr
    assert "::warning::cloud-init finished with recoverable errors" in result.stdout
    assert "known-hosts" in result.outputs


def test_failed_cloud_init_fails_and_keeps_the_first_boot_key(repo: Repo, run: Run,
                                                              booter: Booter) -> None:
    booter.cloud_init_exit = 1
    result = run("provision", "production")
    assert result.code == ExitCode.FAILED
    assert "::error" in result.stdout and "cloud-init failed" in result.stdout
    assert "/var/log/cloud-init-output.log" in result.stdout
    assert booter.servers[SERVER].marker.exists()


def test_changed_host_key_is_refused_never_retried(repo: Repo, run: Run, booter: Booter) -> None:
    assert run("provision", "production", "--no-wait").code == 0
    lab = booter.servers[SERVER]
    other = generate_host_key().public
    wrong = f"[{lab.address}]:{repo.port} {other}"
    result = run("provision", "production", env={"FORGE_KNOWN_HOSTS": wrong})
    assert result.code == ExitCode.FAILED
    assert "CHANGED" in result.stdout
    assert lab.marker.exists()


def test_token_never_printed_or_output(repo: Repo, run: Run, booter: Booter) -> None:
    token = repo.fake.token
    results = [run("provision", "production", "--plan"), run("provision", "production"),
               run("provision", "production", "--json"),
               run("destroy", "production", "--confirm", SERVER)]
    for result in results:
        assert token not in result.everything
    # Outside Actions nothing is masked by a runner: forge itself must not print it.
    plain = run("provision", "production", "--plan", env={"GITHUB_ACTIONS": "false"})
    assert plain.code == 0 and token not in plain.stdout + plain.stderr
    # A wrong token is refused by the API: also never echoed.
    bad = run("provision", "production", env={"HCLOUD_TOKEN": "wrong-token-abcdef"})
    assert bad.code == ExitCode.USAGE
    assert "wrong-token-abcdef" not in bad.everything
