"""Read a Hetzner project into :mod:`~forge_ci.provision.hetzner.state` data. GET only."""

from __future__ import annotations

from functools import partial

from hcloud.firewalls import BoundFirewall
from hcloud.servers import BoundServer

from forge_ci.provision.base import ServerInfo, ServerSpec
from forge_ci.provision.hetzner.api import Api
from forge_ci.provision.hetzner.state import (
    Catalog,
    FirewallState,
    KeyState,
    Rule,
    ServerFacts,
    Settings,
    TypeState,
)
from forge_ci.provision.hostkeys import md5_fingerprint


def observe(api: Api, spec: ServerSpec, settings: Settings) -> ServerFacts:
    server = find_server(api, spec.name)
    firewall = find_firewall(api, spec.name)
    if server is not None:
        # Nothing will be created: the key and the catalogue do not matter.
        return ServerFacts(server=server, firewall=firewall, ssh_key=None, catalog=None)
    return ServerFacts(server=None, firewall=firewall, ssh_key=find_key(api, spec.ssh_public_key),
                    catalog=catalog(api, settings))


def ident(value: int | None) -> int:
    """An id hcloud types as optional but the API always sends for stored resources."""
    if value is None:
        raise ValueError("the Hetzner API returned a resource without an id")
    return int(value)


def find_server(api: Api, name: str) -> ServerInfo | None:
    found = api.call(f"looking up server {name}", partial(api.client.servers.get_by_name, name))
    return server_info(found) if found is not None else None


def server_info(server: BoundServer) -> ServerInfo:
    net = server.public_net
    ipv4 = net.ipv4.ip if net is not None and net.ipv4 is not None else None
    ipv6 = net.ipv6.ip if net is not None and net.ipv6 is not None else None
    return ServerInfo(
        id=str(server.id), name=str(server.name), status=str(server.status), ipv4=ipv4,
        ipv6=ipv6, labels=dict(server.labels or {}),
        server_type=server.server_type.name if server.server_type is not None else None,
        location=server.location.name if server.location is not None else None,
    )


def find_firewall(api: Api, name: str) -> FirewallState | None:
    found = api.call(f"looking up firewall {name}",
                     partial(api.client.firewalls.get_by_name, name))
    return firewall_state(found) if found is not None else None


def firewall_state(fw: BoundFirewall) -> FirewallState:
    rules = tuple(sorted(Rule.of(r.protocol, r.port, r.source_ips, r.direction)
                         for r in fw.rules or []))
    servers = tuple(sorted(ident(res.server.id) for res in fw.applied_to or []
                           if res.type == "server" and res.server is not None))
    return FirewallState(id=ident(fw.id), name=str(fw.name), labels=dict(fw.labels or {}),
                         rules=rules, server_ids=servers)


def find_key(api: Api, public: str) -> KeyState | None:
    fp = md5_fingerprint(public)
    found = api.call("looking up the SSH key", partial(api.client.ssh_keys.get_by_fingerprint, fp))
    if found is None:
        return None
    return KeyState(id=ident(found.id), name=str(found.name), fingerprint=str(found.fingerprint))


def catalog(api: Api, settings: Settings) -> Catalog:
    types: dict[str, TypeState] = {}
    for name in settings.types:
        found = api.call(f"looking up server type {name}",
                         partial(api.client.server_types.get_by_name, name))
        if found is None:
            continue
        where = {str(loc.location.name): loc.available for loc in found.locations or []}
        types[name] = TypeState(name=name, architecture=str(found.architecture or "x86"),
                                locations=where)
    locations = api.call("listing locations", api.client.locations.get_all)
    arches: set[str] = set()
    for arch in sorted({t.architecture for t in types.values()}):
        image = api.call(f"looking up image {settings.image} ({arch})",
                         partial(api.client.images.get_by_name_and_architecture,
                                 settings.image, arch))
        if image is not None:
            arches.add(arch)
    return Catalog(types=types, locations=frozenset(str(loc.name) for loc in locations),
                   image_architectures=frozenset(arches))
