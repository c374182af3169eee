"""Hetzner Cloud as a :class:`~forge_ci.provision.base.Provider`, through hcloud."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from hcloud.firewalls import Firewall
from hcloud.servers import Server

from forge_ci.config.provision import ProvisionConfig
from forge_ci.errors import SecretError
from forge_ci.provision.base import Plan, Provider, Provisioned, ServerSpec
from forge_ci.provision.errors import ProviderApiError, ProvisionTimeout
from forge_ci.provision.hetzner import changes
from forge_ci.provision.hetzner.api import Api, make_client
from forge_ci.provision.hetzner.apply import Applier
from forge_ci.provision.hetzner.observe import find_firewall, find_server, observe
from forge_ci.provision.hetzner.state import ServerFacts, Settings
from forge_ci.provision.policy import ProvisionPolicy

TOKEN_VAR = "HCLOUD_TOKEN"  # noqa: S105 (a variable name, not a value)
ENDPOINT_VAR = "HCLOUD_ENDPOINT"


def settings_from(config: ProvisionConfig) -> Settings:
    return Settings(server_type=config.server_type, image=config.image, location=config.location,
                    fallback_locations=config.fallback_locations,
                    fallback_server_types=config.fallback_server_types)


class HetznerProvider(Provider[ServerFacts]):
    name = "hetzner"

    def __init__(self, api: Api, settings: Settings) -> None:
        self.api = api
        self.settings = settings

    @classmethod
    def from_env(cls, config: ProvisionConfig, environ: Mapping[str, str], policy: ProvisionPolicy,
                 log: Callable[[str], None]) -> HetznerProvider:
        """Build from HCLOUD_TOKEN (required) and HCLOUD_ENDPOINT (optional)."""
        token = environ.get(TOKEN_VAR, "").strip()
        if not token:
            raise SecretError(f"{TOKEN_VAR} is not set",
                              hint="create an API token (Read & Write) in the Hetzner project "
                                   "and pass it as the hcloud-token secret in the step's env:")
        endpoint = environ.get(ENDPOINT_VAR) or None
        api = Api(make_client(token, endpoint), policy, endpoint=endpoint, log=log)
        return cls(api, settings_from(config))

    def observe(self, spec: ServerSpec) -> ServerFacts:
        return observe(self.api, spec, self.settings)

    def plan(self, spec: ServerSpec, observed: ServerFacts) -> Plan:
        return changes.plan(spec, self.settings, observed)

    def apply(self, spec: ServerSpec, plan: Plan) -> Provisioned:
        return Applier(self.api, spec, self.settings).run(plan)

    def plan_destroy(self, name: str, ownership: Mapping[str, str]) -> Plan:
        return changes.plan_destroy(name, ownership, find_server(self.api, name),
                                     find_firewall(self.api, name))

    def destroy(self, plan: Plan) -> None:
        for change in plan.changes:
            ident = int(change.detail["id"])
            if change.kind == "server":
                what = f"deleting server {change.name}"
                action = self.api.call(what, partial(self.api.client.servers.delete,
                                                     Server(id=ident)))
                self.api.wait([action], what)
            elif change.kind == "firewall":
                self._delete_firewall(change.name, ident)

    def _delete_firewall(self, name: str, ident: int) -> None:
        # Hetzner detaches a deleted server's firewall shortly after the delete action.
        deadline = self.api.policy.deadline(self.api.policy.action_timeout)
        while True:
            try:
                self.api.call(f"deleting firewall {name}",
                              partial(self.api.client.firewalls.delete, Firewall(id=ident)))
                return
            except ProviderApiError as e:
                if e.code != "resource_in_use":
                    raise
                if deadline.passed:
                    raise ProvisionTimeout(f"firewall {name} is still in use",
                                           hint="delete it in the Hetzner console") from None
                deadline.wait()
