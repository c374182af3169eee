"""Plan a Hetzner environment from observed state. Pure: no I/O, data in, data out.

Rules:

- A server, firewall or SSH key is created only when missing. A server or
  firewall with forge's name but without forge's labels stops the plan
  (:class:`NotManagedError`): forge never adopts or changes what it did not make.
- The firewall opens ``open_ports`` (80, 443) and ICMP to everyone and
  ``ssh_port`` only to ``ssh_sources``; rules that differ are replaced, and an
  existing server without the firewall gets it attached.
- The SSH key is matched by fingerprint, whatever its name.
- Server type and location candidates are tried in order: every location of the
  first type, then every location of the next type. A pair Hetzner reports as
  unavailable right now is left out of the plan (and noted).
- Differences forge does not fix (a server of another type or in another
  location) are notes, never changes: resizing or moving is a human decision.
"""

from __future__ import annotations

from collections.abc import Mapping

from forge_ci.errors import ConfigError
from forge_ci.provision.base import Change, Plan, ServerInfo, ServerSpec, carries
from forge_ci.provision.errors import CapacityError, NotManagedError
from forge_ci.provision.hetzner.state import Catalog, FirewallState, Rule, ServerFacts, Settings
from forge_ci.provision.hostkeys import md5_fingerprint

PROVIDER = "hetzner"
ANYWHERE = ("0.0.0.0/0", "::/0")


def desired_rules(spec: ServerSpec) -> tuple[Rule, ...]:
    rules = [Rule.of("icmp", None, ANYWHERE)]
    rules += [Rule.of("tcp", str(port), ANYWHERE) for port in spec.open_ports]
    rules.append(Rule.of("tcp", str(spec.ssh_port), spec.ssh_sources))
    return tuple(sorted(set(rules)))


def rule_text(rule: Rule) -> str:
    port = f"/{rule.port}" if rule.port else ""
    return f"{rule.direction} {rule.protocol}{port} from {','.join(rule.sources)}"


def key_name(fingerprint: str) -> str:
    """The name forge gives an SSH key it registers (unique per fingerprint)."""
    return "forge-ci-" + fingerprint.replace(":", "")[:16]


def plan(spec: ServerSpec, settings: Settings, observed: ServerFacts) -> Plan:
    changes: list[Change] = []
    notes: list[str] = []
    server = observed.server
    if server is not None:
        _check_server(spec, server)
        notes += _drift(settings, server)
    changes += _firewall(spec, observed.firewall, server)
    if server is None:
        if observed.ssh_key is None:
            changes.insert(0, Change("create", "ssh_key", _key_label(spec),
                                     {"fingerprint": _fingerprint(spec)}))
        if observed.catalog is None:
            raise ValueError("a server to create needs the observed catalogue")
        found, skipped = candidates(settings, observed.catalog)
        notes += skipped
        changes.append(Change("create", "server", spec.name, {
            "server_type": found[0].split("@")[0], "location": found[0].split("@")[1],
            "image": settings.image, "candidates": found, "firewall": spec.name,
            "ssh_key": _fingerprint(spec), "labels": dict(spec.labels),
        }))
    elif dict(server.labels) != dict(spec.labels):
        changes.append(Change("update", "server", spec.name,
                              {"id": server.id, "labels": dict(spec.labels)}))
    return Plan(provider=PROVIDER, server_name=spec.name, changes=tuple(changes),
                existing=server, notes=tuple(notes))


def plan_destroy(name: str, ownership: Mapping[str, str], server: ServerInfo | None,
                 firewall: FirewallState | None) -> Plan:
    """Delete the server and forge's firewall for it; refuse a server forge did not make."""
    if server is None:
        return Plan(provider=PROVIDER, server_name=name, changes=(),
                    notes=(f"no server named {name}: nothing to destroy",))
    if not carries(server.labels, ownership):
        raise NotManagedError(
            f"server {name} (id {server.id}) does not carry forge's labels "
            f"({_labels_text(ownership)}); forge destroys only servers it made",
            hint="delete it in the Hetzner console if it really should go",
        )
    changes = [Change("delete", "server", name, {"id": server.id, "ipv4": server.ipv4})]
    if firewall is not None and carries(firewall.labels, ownership):
        others = [i for i in firewall.server_ids if str(i) != server.id]
        if not others:
            changes.append(Change("delete", "firewall", firewall.name, {"id": firewall.id}))
    return Plan(provider=PROVIDER, server_name=name, changes=tuple(changes), existing=server)


def candidates(settings: Settings, catalog: Catalog) -> tuple[list[str], list[str]]:
    """``type@location`` pairs to try in order, and notes on the ones left out."""
    found: list[str] = []
    notes: list[str] = []
    for loc in settings.locations:
        if loc not in catalog.locations:
            raise ConfigError(f"Hetzner has no location {loc!r}", key="provision.location",
                              hint=f"known: {', '.join(sorted(catalog.locations))}")
    for name in settings.types:
        st = catalog.types.get(name)
        if st is None:
            raise ConfigError(f"Hetzner has no server type {name!r}", key="provision.server_type",
                              hint="see `hcloud server-type list` or the Hetzner price list")
        if st.architecture not in catalog.image_architectures:
            raise ConfigError(f"image {settings.image!r} does not exist for {name} "
                              f"({st.architecture})", key="provision.image")
        for loc in settings.locations:
            if st.locations and loc not in st.locations:
                notes.append(f"{name} is not offered in {loc}")
            elif st.locations.get(loc) is False:
                notes.append(f"{name} is unavailable in {loc} right now")
            else:
                found.append(f"{name}@{loc}")
    if not found:
        raise CapacityError(
            "no configured server type is available in any configured location: "
            + "; ".join(notes),
            hint="add fallback_locations or fallback_server_types to provision:, or retry later",
        )
    return found, notes


def _check_server(spec: ServerSpec, server: ServerInfo) -> None:
    if not carries(server.labels, spec.ownership):
        raise NotManagedError(
            f"a server named {spec.name} (id {server.id}) exists but does not carry forge's "
            f"labels ({_labels_text(spec.ownership)}); forge will not adopt or change it",
            hint="set provision.name to another name, or rename that server",
        )


def _drift(settings: Settings, server: ServerInfo) -> list[str]:
    notes = []
    if server.server_type and server.server_type not in settings.types:
        notes.append(f"server is {server.server_type}, config asks for {settings.server_type} "
                     "(forge does not resize servers)")
    if server.location and server.location not in settings.locations:
        notes.append(f"server is in {server.location}, config asks for {settings.location} "
                     "(forge does not move servers)")
    return notes


def _firewall(spec: ServerSpec, fw: FirewallState | None,
              server: ServerInfo | None) -> list[Change]:
    rules = desired_rules(spec)
    texts = [rule_text(r) for r in rules]
    if fw is None:
        target = server.id if server is not None else "(the new server)"
        return [Change("create", "firewall", spec.name, {"rules": texts, "apply_to": target})]
    if not carries(fw.labels, spec.ownership):
        raise NotManagedError(
            f"a firewall named {spec.name} (id {fw.id}) exists but does not carry forge's "
            "labels; forge will not change it",
            hint="rename or delete that firewall, or set provision.name to another name",
        )
    changes = []
    if tuple(sorted(fw.rules)) != rules:
        changes.append(Change("update", "firewall", spec.name, {"id": fw.id, "rules": texts}))
    if server is not None and int(server.id) not in fw.server_ids:
        changes.append(Change("attach", "firewall", spec.name,
                              {"id": fw.id, "server_id": server.id}))
    return changes


def _fingerprint(spec: ServerSpec) -> str:
    return md5_fingerprint(spec.ssh_public_key)


def _key_label(spec: ServerSpec) -> str:
    return key_name(_fingerprint(spec))


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())
