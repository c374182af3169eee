"""The fake Hetzner API itself, through hcloud: shapes, filters, pagination, errors."""

from __future__ import annotations

import pytest
import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.server_types import ServerType
from lab.hetzner import HetznerFake


def client(fake: HetznerFake, token: str | None = None) -> Client:
    return Client(token or fake.token, api_endpoint=fake.url, poll_interval=0)


def test_lists_paginate_and_filter_by_labels(fake: HetznerFake) -> None:
    for i in range(60):
        fake.add_server(f"s{i}", {"env": "a" if i % 2 else "b", "team": "web"})
    hc = client(fake)
    assert len(hc.servers.get_all()) == 60  # two pages of 50 and 10
    assert [c.query.get("page") for c in fake.calls] == [["1"], ["2"]]
    assert len(hc.servers.get_all(label_selector="env=a,team")) == 30
    assert len(hc.servers.get_all(label_selector="env!=a")) == 30
    assert hc.servers.get_all(label_selector="!team") == []
    assert hc.servers.get_by_name("s7").labels["env"] == "a"


def test_create_returns_server_action_and_null_root_password(fake: HetznerFake) -> None:
    hc = client(fake)
    made = hc.servers.create(name="web1", server_type=ServerType(name="cx22"),
                             image=Image(name="ubuntu-24.04"), user_data="#cloud-config\n")
    assert made.root_password is None and made.action.status == "running"
    assert made.server.public_net.ipv4.ip == "127.0.0.2"
    made.action.wait_until_finished()
    assert hc.servers.get_by_id(made.server.id).status == "running"
    assert fake.user_data["web1"] == "#cloud-config\n"
    with pytest.raises(APIException) as info:
        hc.servers.create(name="web1", server_type=ServerType(name="cx22"),
                          image=Image(name="ubuntu-24.04"))
    assert info.value.code == "uniqueness_error"


def test_errors_have_hetzner_codes_and_statuses(fake: HetznerFake) -> None:
    raw = requests.get(f"{fake.url}/servers", headers={"Authorization": "Bearer nope"},
                       timeout=5)
    assert raw.status_code == 401
    assert raw.json()["error"]["code"] == "unauthorized"
    fake.rate_limit(1)
    raw = requests.get(f"{fake.url}/servers", headers={"Authorization": f"Bearer {fake.token}"},
                       timeout=5)
    assert raw.status_code == 429 and raw.headers["RateLimit-Remaining"] == "0"
    fake.make_unavailable("fsn1")
    with pytest.raises(APIException) as info:
        client(fake).servers.create(name="x", server_type=ServerType(name="cx22"),
                                    image=Image(name="ubuntu-24.04"))
    assert info.value.code == "resource_unavailable"
    assert [c.status for c in fake.calls] == [401, 429, 412]


def test_ssh_keys_by_fingerprint_and_firewalls_in_use(fake: HetznerFake) -> None:
    hc = client(fake)
    key = hc.ssh_keys.create(name="k", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH5dDXZ/"
                             "6IgxPcZbkXhFMBOfhENP9A+xYD2h6VOT2MhW x")
    assert hc.ssh_keys.get_by_fingerprint(str(key.fingerprint)).name == "k"
    server = fake.add_server("web1")
    fw = fake.add_firewall("fw", {"managed-by": "forge-ci"})
    fw["applied_to"].append({"type": "server", "server": {"id": server["id"]}})
    bound = hc.firewalls.get_by_name("fw")
    assert bound.applied_to[0].server.id == server["id"]
    with pytest.raises(APIException) as info:
        hc.firewalls.delete(bound)
    assert info.value.code == "resource_in_use"
