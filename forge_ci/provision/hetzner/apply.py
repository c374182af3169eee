"""Carry out a Hetzner plan, change by change, waiting for each action.

Creates that meet ``uniqueness_error`` (a retried request whose first attempt
went through, or a concurrent run) adopt the existing resource only when it
carries forge's labels. ``resource_unavailable`` on a server create moves on to
the next ``type@location`` candidate of the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from hcloud.firewalls import Firewall, FirewallResource, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server
from hcloud.ssh_keys import SSHKey

from forge_ci.provision.base import Change, Plan, Provisioned, ServerInfo, ServerSpec, carries
from forge_ci.provision.errors import (
    CapacityError,
    NotManagedError,
    ProviderApiError,
    ProvisionTimeout,
)
from forge_ci.provision.hetzner.api import Api
from forge_ci.provision.hetzner.changes import desired_rules
from forge_ci.provision.hetzner.observe import (
    find_firewall,
    find_key,
    find_server,
    ident,
    server_info,
)
from forge_ci.provision.hetzner.state import Settings


class Applier:
    """One run of :meth:`run`; remembers ids of what it made for later changes."""

    def __init__(self, api: Api, spec: ServerSpec, settings: Settings) -> None:
        self.api, self.spec, self.settings = api, spec, settings
        self.key_id: int | None = None
        self.firewall_id: int | None = None
        self.notes: list[str] = []

    def run(self, plan: Plan) -> Provisioned:
        handlers: dict[tuple[str, str], Callable[[Change], None]] = {
            ("create", "ssh_key"): self._create_key,
            ("create", "firewall"): self._create_firewall,
            ("update", "firewall"): self._set_rules,
            ("attach", "firewall"): self._attach_firewall,
            ("update", "server"): self._update_labels,
        }
        made: Provisioned | None = None
        for change in plan.changes:
            if (change.action, change.kind) == ("create", "server"):
                made = self._create_server(change)
            else:
                handlers[(change.action, change.kind)](change)
        if made is not None:
            return made
        assert plan.existing is not None, "a plan without a server create has an existing server"
        server = find_server(self.api, plan.existing.name) if plan.changes else plan.existing
        return Provisioned(server=server or plan.existing, booted_from_spec=False,
                           notes=tuple(self.notes))

    # -- SSH key ----------------------------------------------------------------

    def _create_key(self, change: Change) -> None:
        client = self.api.client
        try:
            key = self.api.call("registering the SSH key", partial(
                client.ssh_keys.create, name=change.name, public_key=self.spec.ssh_public_key,
                labels={"managed-by": "forge-ci"}))
            self.key_id = ident(key.id)
        except ProviderApiError as e:
            if e.code != "uniqueness_error":
                raise
            # Registered meanwhile (a retried request, another run): use it by fingerprint.
            found = find_key(self.api, self.spec.ssh_public_key)
            if found is None:
                raise ProviderApiError(
                    f"an SSH key named {change.name} exists with another fingerprint",
                    code=e.code, hint="rename or delete that key in the Hetzner console",
                ) from None
            self.key_id = found.id

    def _key(self) -> int:
        if self.key_id is None:
            found = find_key(self.api, self.spec.ssh_public_key)
            if found is None:
                raise ProviderApiError("the SSH key vanished between plan and apply",
                                       code="not_found", hint="run provision again")
            self.key_id = found.id
        return self.key_id

    # -- firewall ---------------------------------------------------------------

    def _rules(self) -> list[FirewallRule]:
        return [FirewallRule(direction=r.direction, protocol=r.protocol, port=r.port,
                             source_ips=list(r.sources)) for r in desired_rules(self.spec)]

    def _create_firewall(self, change: Change) -> None:
        client = self.api.client
        target = change.detail.get("apply_to")
        resources = None
        if isinstance(target, str) and target.isdigit():
            resources = [FirewallResource(type="server", server=Server(id=int(target)))]
        what = f"creating firewall {change.name}"
        try:
            made = self.api.call(what, partial(
                client.firewalls.create, name=change.name, rules=self._rules(),
                # hcloud annotates labels as str; the API takes (and hcloud sends) a dict.
                labels=dict(self.spec.ownership),  # type: ignore[arg-type]
                resources=resources))
        except ProviderApiError as e:
            if e.code != "uniqueness_error":
                raise
            self.firewall_id = self._adopt_firewall(change.name)
            self._set_rules(change)
            return
        self.api.wait(made.actions or [], what)
        self.firewall_id = ident(made.firewall.id)

    def _adopt_firewall(self, name: str) -> int:
        found = find_firewall(self.api, name)
        if found is None or not carries(found.labels, self.spec.ownership):
            raise NotManagedError(f"a firewall named {name} appeared that forge did not make",
                                  hint="rename or delete it, then run provision again")
        self.notes.append(f"firewall {name} already existed with forge's labels: adopted")
        return found.id

    def _firewall(self) -> int:
        if self.firewall_id is None:
            found = find_firewall(self.api, self.spec.name)
            if found is None:
                raise ProviderApiError("the firewall vanished between plan and apply",
                                       code="not_found", hint="run provision again")
            self.firewall_id = found.id
        return self.firewall_id

    def _set_rules(self, change: Change) -> None:
        fw_id = int(change.detail.get("id") or self._firewall())
        what = f"updating the rules of firewall {change.name}"
        actions = self.api.call(what, partial(self.api.client.firewalls.set_rules,
                                              Firewall(id=fw_id), self._rules()))
        self.api.wait(actions, what)

    def _attach_firewall(self, change: Change) -> None:
        server = FirewallResource(type="server", server=Server(id=int(change.detail["server_id"])))
        what = f"applying firewall {change.name} to the server"
        actions = self.api.call(what, partial(self.api.client.firewalls.apply_to_resources,
                                              Firewall(id=int(change.detail["id"])), [server]))
        self.api.wait(actions, what)

    # -- server -----------------------------------------------------------------

    def _update_labels(self, change: Change) -> None:
        labels: dict[str, Any] = dict(change.detail["labels"])
        self.api.call(f"updating the labels of server {change.name}", partial(
            self.api.client.servers.update, Server(id=int(change.detail["id"])), labels=labels))

    def _create_server(self, change: Change) -> Provisioned:
        tried: list[str] = []
        for candidate in change.detail["candidates"]:
            server_type, location = candidate.split("@")
            what = f"creating server {change.name} ({server_type} in {location})"
            try:
                made = self.api.call(what, partial(
                    self.api.client.servers.create, name=change.name,
                    server_type=ServerType(name=server_type),
                    image=Image(name=self.settings.image), location=Location(name=location),
                    ssh_keys=[SSHKey(id=self._key())], firewalls=[Firewall(id=self._firewall())],
                    user_data=self.spec.user_data, labels=dict(self.spec.labels),
                    start_after_create=True))
            except ProviderApiError as e:
                if e.code == "resource_unavailable":
                    tried.append(candidate)
                    self.api.log(f"{server_type} is unavailable in {location}; "
                                 "trying the next fallback")
                    self.notes.append(f"{candidate} was unavailable")
                    continue
                if e.code == "uniqueness_error":
                    return self._adopt_server(change.name)
                raise
            self.api.wait([made.action, *made.next_actions], what)
            server_id = ident(made.server.id)
            server = self.api.call(f"reading server {change.name}",
                                   partial(self.api.client.servers.get_by_id, server_id))
            return Provisioned(server=server_info(server), booted_from_spec=True,
                               notes=tuple(self.notes))
        raise CapacityError(f"no capacity for server {change.name}: tried {', '.join(tried)}",
                            hint="add fallback_locations or fallback_server_types to "
                                 "provision:, or run again later")

    def _adopt_server(self, name: str) -> Provisioned:
        found = find_server(self.api, name)
        if found is None or not carries(found.labels, self.spec.ownership):
            raise NotManagedError(
                f"creating server {name} failed: the name is taken by a server forge did not make",
                hint="set provision.name to another name, or rename that server",
            )
        # Our own earlier attempt went through (its answer was lost): same labels,
        # same user data, so the first-boot key is ours.
        self.notes.append(f"server {name} already existed with forge's labels "
                          "(a retried create): adopted")
        return Provisioned(server=self._wait_running(found), booted_from_spec=True,
                           notes=tuple(self.notes))

    def _wait_running(self, server: ServerInfo) -> ServerInfo:
        deadline = self.api.policy.deadline(self.api.policy.action_timeout)
        while server.status != "running":
            if deadline.passed:
                raise ProvisionTimeout(f"server {server.name} is still {server.status}",
                                       hint="look at it in the Hetzner console, then run again")
            deadline.wait()
            bound = self.api.call(f"reading server {server.name}",
                                  partial(self.api.client.servers.get_by_id, int(server.id)))
            server = server_info(bound)
        return server
