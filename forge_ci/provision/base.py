"""The provider seam: how forge gets a server for an environment, anywhere.

A provider works in three steps, so that ``--plan`` is exact and plans can be
tested as data without any API:

``observe(spec) -> ServerFacts``
    Read-only calls (GET and nothing else) that capture what exists now, as
    plain data owned by the provider. Raises :class:`ProviderAuthError` or
    :class:`ProviderUnavailable` when the API cannot be used.

``plan(spec, observed) -> Plan``
    Pure: no I/O, same input same output. Lists the :class:`Change` values that
    would make ``observed`` match ``spec`` — nothing for what already matches, so
    a second run plans nothing. Raises :class:`NotManagedError` when something
    with the spec's name exists but does not carry forge's labels (forge never
    adopts or changes what it did not make) and :class:`CapacityError` when no
    configured choice can take the server.

``apply(spec, plan) -> Provisioned``
    Makes the plan's changes in order and waits for each to finish (within the
    policy's limits). Safe to re-run after a failure: the next run observes
    again and plans only what is still missing.

Destroying mirrors it: :meth:`Provider.plan_destroy` (observe + plan, read
only; refuses servers without forge's labels) then :meth:`Provider.destroy`.

The rest of forge (deploy, backup) never sees a provider: it gets an address
and a ``known_hosts`` line. A host that cannot boot from cloud-init user data
(a cPanel-style account, a CyberPanel API) sets ``boots_from_user_data`` False
and provisioning skips the first-boot host-key handshake for it.

What a provider implements (one subclass of :class:`Provider`, chosen by
``provision.provider`` in forge.yml through :func:`forge_ci.provision.providers.make_provider`):

- ``name`` (the config value) and ``boots_from_user_data``;
- ``observe``, ``plan``, ``apply`` as above; ``plan`` returns :class:`Plan` with
  ``existing`` set to the :class:`ServerInfo` forge will connect to (its ``ipv4``
  is the address; a provider without a server of its own reports the host it set up);
- ``plan_destroy`` and ``destroy``: delete only what carries forge's labels, or
  raise :class:`~forge_ci.errors.ProvisionError` saying why it never deletes
  (``ssh``: forge did not create the server);
- outputs: :class:`Provisioned` carries the server, ``notes`` (logged),
  ``warnings`` (what the user must fix that did not fail the run, e.g. an HTTPS
  certificate pending on DNS) and ``https`` (forge-https's status line, when read).
- a ``from_env`` builder taking the ``provision:`` config, the site
  (:class:`~forge_ci.provision.site.Site`), the environment's hosts and the process
  environment; secrets come only from there (SecretError naming the variable).

Providers: ``hetzner`` (creates the server; the stack comes from cloud-init user
data, :mod:`.cloudinit`), ``ssh`` (an existing Debian/Ubuntu server: the same
stack files, :func:`forge_ci.provision.stack.files`, written over SSH).
``cyberpanel`` and ``cpanel`` (sites on a control panel, through its API) use the
same seam.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

# Labels that mark a resource as forge's; every provider that has labels uses them.
MANAGED_BY = ("managed-by", "forge-ci")
PROJECT_LABEL = "forge-project"
ENVIRONMENT_LABEL = "forge-environment"


def forge_labels(project: str, environment: str) -> dict[str, str]:
    return {MANAGED_BY[0]: MANAGED_BY[1], PROJECT_LABEL: project, ENVIRONMENT_LABEL: environment}


def carries(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """True when ``labels`` holds every key of ``wanted`` with the same value."""
    return all(labels.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class ServerSpec:
    """What the environment needs from a server, whoever hosts it."""

    name: str
    # forge's labels (see forge_labels) plus the user's; ``ownership`` is forge's part.
    labels: Mapping[str, str]
    ownership: Mapping[str, str]
    ssh_public_key: str  # OpenSSH line of FORGE_SSH_KEY's public half
    ssh_port: int
    ssh_sources: tuple[str, ...]  # CIDRs allowed to reach ssh_port
    open_ports: tuple[int, ...] = (80, 443)  # open to everyone
    user_data: str = field(default="", repr=False)  # holds the first-boot host key


@dataclass(frozen=True)
class ServerInfo:
    """A server as the provider reports it (plain data, JSON-able)."""

    id: str
    name: str
    status: str
    ipv4: str | None
    ipv6: str | None
    labels: Mapping[str, str]
    server_type: str | None = None
    location: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "ipv4": self.ipv4,
                "ipv6": self.ipv6, "labels": dict(self.labels),
                "server_type": self.server_type, "location": self.location}


_SYMBOL = {"create": "+", "delete": "-", "update": "~", "attach": "~"}


@dataclass(frozen=True)
class Change:
    """One change a plan would make. ``detail`` is plain, JSON-able data."""

    action: str  # create | update | attach | delete
    kind: str  # server | ssh_key | firewall | ...
    name: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One line for logs; mappings (labels) are left to the JSON form."""
        facts = ", ".join(f"{k}={_short(v)}" for k, v in self.detail.items()
                          if not isinstance(v, Mapping))
        text = f"{_SYMBOL.get(self.action, '*')} {self.action} {self.kind} {self.name}"
        return f"{text} ({facts})" if facts else text

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "name": self.name,
                "detail": dict(self.detail)}


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + "; ".join(str(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Plan:
    """What a provision or destroy run would change; empty means nothing."""

    provider: str
    server_name: str
    changes: tuple[Change, ...]
    existing: ServerInfo | None = None  # the server as observed, if there is one
    notes: tuple[str, ...] = ()  # differences forge reports but does not change

    @property
    def empty(self) -> bool:
        return not self.changes

    def creates(self, kind: str) -> bool:
        return any(c.action == "create" and c.kind == kind for c in self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "server": self.server_name,
                "changes": [c.as_dict() for c in self.changes],
                "existing": self.existing.as_dict() if self.existing else None,
                "notes": list(self.notes)}

    def lines(self) -> list[str]:
        out = [c.line() for c in self.changes] or ["(no changes)"]
        return out + [f"note: {n}" for n in self.notes]


@dataclass(frozen=True)
class Provisioned:
    """The result of :meth:`Provider.apply`.

    ``booted_from_spec`` is True when the server was created from this run's
    ``spec.user_data`` (so its host key is the first-boot key forge generated).
    """

    server: ServerInfo
    booted_from_spec: bool
    notes: tuple[str, ...] = ()
    # What the user must fix that did not fail the run (an HTTPS certificate pending).
    warnings: tuple[str, ...] = ()
    # forge-https's status line, when the provider read it (``ok ...``, ``pending ...``).
    https: str | None = None


ObservedT = TypeVar("ObservedT")


class Provider(abc.ABC, Generic[ObservedT]):
    """One hosting provider. See the module docstring for the contract."""

    name: ClassVar[str]
    boots_from_user_data: ClassVar[bool] = True

    @abc.abstractmethod
    def observe(self, spec: ServerSpec) -> ObservedT: ...

    @abc.abstractmethod
    def plan(self, spec: ServerSpec, observed: ObservedT) -> Plan: ...

    @abc.abstractmethod
    def apply(self, spec: ServerSpec, plan: Plan) -> Provisioned: ...

    @abc.abstractmethod
    def plan_destroy(self, name: str, ownership: Mapping[str, str]) -> Plan: ...

    @abc.abstractmethod
    def destroy(self, plan: Plan) -> None: ...

    def reconcile_plan(self, spec: ServerSpec) -> Plan:
        """observe then plan: everything ``--plan`` does."""
        return self.plan(spec, self.observe(spec))
