"""Hetzner plans as data: observed state in, changes out. No API, no server."""

from __future__ import annotations

from dataclasses import replace

import pytest

from forge_ci.errors import ConfigError
from forge_ci.provision.base import ServerInfo, ServerSpec, forge_labels
from forge_ci.provision.errors import CapacityError, NotManagedError
from forge_ci.provision.hetzner.changes import desired_rules, plan, plan_destroy
from forge_ci.provision.hetzner.state import (
    Catalog,
    FirewallState,
    KeyState,
    Rule,
    ServerFacts,
    Settings,
    TypeState,
)

OWN = forge_labels("shop", "production")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH5dDXZ/6IgxPcZbkXhFMBOfhENP9A+xYD2h6VOT2MhW forge"
SPEC = ServerSpec(name="shop-production", labels={**OWN, "team": "web"}, ownership=OWN,
                  ssh_public_key=KEY, ssh_port=22, ssh_sources=("203.0.113.0/24",))
SETTINGS = Settings(server_type="cx22", image="ubuntu-24.04", location="fsn1",
                    fallback_locations=("nbg1",), fallback_server_types=("cx32",))
ALL = {"fsn1": True, "nbg1": True, "hel1": True}
CATALOG = Catalog(
    types={"cx22": TypeState("cx22", "x86", ALL), "cx32": TypeState("cx32", "x86", ALL)},
    locations=frozenset(ALL), image_architectures=frozenset({"x86"}),
)
SERVER = ServerInfo(id="7", name="shop-production", status="running", ipv4="198.51.100.7",
                    ipv6=None, labels={**OWN, "team": "web"}, server_type="cx22", location="fsn1")
FIREWALL = FirewallState(id=3, name="shop-production", labels=OWN, rules=desired_rules(SPEC),
                         server_ids=(7,))
NOTHING = ServerFacts(server=None, firewall=None, ssh_key=None, catalog=CATALOG)


def kinds(observed: ServerFacts, settings: Settings = SETTINGS) -> list[tuple[str, str]]:
    return [(c.action, c.kind) for c in plan(SPEC, settings, observed).changes]


def test_empty_project_plans_key_firewall_then_server() -> None:
    p = plan(SPEC, SETTINGS, NOTHING)
    assert [(c.action, c.kind) for c in p.changes] == [
        ("create", "ssh_key"), ("create", "firewall"), ("create", "server")]
    server = p.changes[-1].detail
    # Type-major: keep the size, move location first; then the next size.
    assert server["candidates"] == ["cx22@fsn1", "cx22@nbg1", "cx32@fsn1", "cx32@nbg1"]
    assert server["labels"] == {**OWN, "team": "web"}
    assert p.changes[0].detail["fingerprint"].count(":") == 15  # MD5, as Hetzner reports it


def test_existing_key_is_reused_whatever_its_name() -> None:
    observed = replace(NOTHING, ssh_key=KeyState(id=5, name="alice laptop", fingerprint="x"))
    assert kinds(observed) == [("create", "firewall"), ("create", "server")]


def test_everything_in_place_plans_nothing() -> None:
    p = plan(SPEC, SETTINGS,
             ServerFacts(server=SERVER, firewall=FIREWALL, ssh_key=None, catalog=None))
    assert p.empty and p.notes == () and p.existing == SERVER


def test_firewall_rules_open_web_to_all_and_ssh_to_sources_only() -> None:
    rules = {(r.protocol, r.port): r.sources for r in desired_rules(SPEC)}
    assert rules == {("icmp", None): ("0.0.0.0/0", "::/0"), ("tcp", "80"): ("0.0.0.0/0", "::/0"),
                     ("tcp", "443"): ("0.0.0.0/0", "::/0"), ("tcp", "22"): ("203.0.113.0/24",)}


def test_rule_drift_is_replaced_and_a_missing_attachment_added() -> None:
    loose = replace(FIREWALL, rules=(Rule.of("tcp", "22", ["0.0.0.0/0"]),), server_ids=())
    p = plan(SPEC, SETTINGS, ServerFacts(server=SERVER, firewall=loose, ssh_key=None, catalog=None))
    assert [(c.action, c.kind) for c in p.changes] == [("update", "firewall"),
                                                      ("attach", "firewall")]
    assert p.changes[1].detail == {"id": 3, "server_id": "7"}
    assert "in tcp/22 from 203.0.113.0/24" in p.changes[0].detail["rules"]


def test_missing_firewall_for_an_existing_server_is_created_on_it() -> None:
    p = plan(SPEC, SETTINGS, ServerFacts(server=SERVER, firewall=None, ssh_key=None, catalog=None))
    assert [(c.action, c.kind) for c in p.changes] == [("create", "firewall")]
    assert p.changes[0].detail["apply_to"] == "7"


def test_label_drift_updates_labels_but_type_drift_is_only_a_note() -> None:
    server = replace(SERVER, labels=OWN, server_type="cpx41", location="ash")
    p = plan(SPEC, SETTINGS,
             ServerFacts(server=server, firewall=FIREWALL, ssh_key=None, catalog=None))
    assert [(c.action, c.kind) for c in p.changes] == [("update", "server")]
    assert p.changes[0].detail["labels"]["team"] == "web"
    assert any("forge does not resize" in n for n in p.notes)
    assert any("forge does not move" in n for n in p.notes)


def test_a_server_without_forge_labels_is_never_adopted() -> None:
    foreign = replace(SERVER, labels={"team": "web"})
    with pytest.raises(NotManagedError, match="does not carry forge's labels"):
        plan(SPEC, SETTINGS, ServerFacts(server=foreign, firewall=None, ssh_key=None, catalog=None))
    other_env = replace(SERVER, labels={**OWN, "forge-environment": "staging"})
    with pytest.raises(NotManagedError):
        plan(SPEC, SETTINGS, ServerFacts(server=other_env, firewall=None, ssh_key=None,
                                      catalog=None))


def test_a_foreign_firewall_with_our_name_stops_the_plan() -> None:
    foreign = replace(FIREWALL, labels={})
    with pytest.raises(NotManagedError, match="firewall"):
        plan(SPEC, SETTINGS, replace(NOTHING, firewall=foreign))


def test_unavailable_pairs_are_skipped_with_a_note() -> None:
    busy = {"fsn1": False, "nbg1": True}
    catalog = replace(CATALOG, types={**CATALOG.types, "cx22": TypeState("cx22", "x86", busy)})
    p = plan(SPEC, SETTINGS, replace(NOTHING, catalog=catalog))
    assert p.changes[-1].detail["candidates"] == ["cx22@nbg1", "cx32@fsn1", "cx32@nbg1"]
    assert p.changes[-1].detail["location"] == "nbg1"
    assert "cx22 is unavailable in fsn1 right now" in p.notes


def test_nothing_available_is_a_capacity_error() -> None:
    none = {"fsn1": False, "nbg1": False}
    catalog = replace(CATALOG, types={"cx22": TypeState("cx22", "x86", none),
                                      "cx32": TypeState("cx32", "x86", {"hel1": True})})
    with pytest.raises(CapacityError) as info:
        plan(SPEC, SETTINGS, replace(NOTHING, catalog=catalog))
    assert "cx32 is not offered in fsn1" in str(info.value)
    assert "fallback_locations" in str(info.value)


@pytest.mark.parametrize(("settings", "key"), [
    (replace(SETTINGS, server_type="cx999"), "provision.server_type"),
    (replace(SETTINGS, fallback_locations=("mars1",)), "provision.location"),
    (replace(SETTINGS, image="ubuntu-99.04"), "provision.image"),
])
def test_unknown_names_are_config_errors(settings: Settings, key: str) -> None:
    catalog = CATALOG
    if settings.image != SETTINGS.image:
        catalog = replace(CATALOG, image_architectures=frozenset())
    with pytest.raises(ConfigError) as info:
        plan(SPEC, settings, replace(NOTHING, catalog=catalog))
    assert info.value.key == key


def test_destroy_plans() -> None:
    assert plan_destroy("shop-production", OWN, None, None).empty
    p = plan_destroy("shop-production", OWN, SERVER, FIREWALL)
    assert [(c.action, c.kind) for c in p.changes] == [("delete", "server"),
                                                      ("delete", "firewall")]
    shared = replace(FIREWALL, server_ids=(7, 8))
    assert len(plan_destroy("shop-production", OWN, SERVER, shared).changes) == 1
    foreign_fw = replace(FIREWALL, labels={})
    assert len(plan_destroy("shop-production", OWN, SERVER, foreign_fw).changes) == 1
    with pytest.raises(NotManagedError, match="destroys only servers it made"):
        plan_destroy("shop-production", OWN, replace(SERVER, labels={}), FIREWALL)


def test_plan_renders_for_humans_and_json() -> None:
    p = plan(SPEC, SETTINGS, NOTHING)
    lines = p.lines()
    assert lines[0].startswith("+ create ssh_key forge-ci-")
    assert lines[2].startswith("+ create server shop-production (server_type=cx22")
    data = p.as_dict()
    assert data["server"] == "shop-production" and len(data["changes"]) == 3
