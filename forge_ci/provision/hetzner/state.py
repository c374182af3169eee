"""What forge observed in a Hetzner project, as plain data (no hcloud objects).

:func:`~forge_ci.provision.hetzner.changes.plan` takes only these, so plans are
tested by building them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from forge_ci.provision.base import ServerInfo


@dataclass(frozen=True, order=True)
class Rule:
    """One inbound firewall rule; ``sources`` sorted so equal rules compare equal."""

    protocol: str
    port: str | None
    sources: tuple[str, ...]
    direction: str = "in"

    @classmethod
    def of(cls, protocol: str, port: str | None, sources: tuple[str, ...] | list[str],
           direction: str = "in") -> Rule:
        return cls(protocol, port, tuple(sorted(sources)), direction)


@dataclass(frozen=True)
class KeyState:
    id: int
    name: str
    fingerprint: str


@dataclass(frozen=True)
class FirewallState:
    id: int
    name: str
    labels: Mapping[str, str]
    rules: tuple[Rule, ...]
    server_ids: tuple[int, ...]


@dataclass(frozen=True)
class TypeState:
    """A server type; ``locations`` maps a location name to "available now" (None: unknown)."""

    name: str
    architecture: str
    locations: Mapping[str, bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    """What can be ordered. Looked at only when a server has to be created."""

    types: Mapping[str, TypeState]  # configured names only; a missing name does not exist
    locations: frozenset[str]
    image_architectures: frozenset[str]  # architectures the configured image exists for


@dataclass(frozen=True)
class ServerFacts:
    server: ServerInfo | None
    firewall: FirewallState | None
    ssh_key: KeyState | None
    catalog: Catalog | None  # None when the server exists


@dataclass(frozen=True)
class Settings:
    """The Hetzner-specific choices from ``provision:``."""

    server_type: str
    image: str
    location: str
    fallback_locations: tuple[str, ...] = ()
    fallback_server_types: tuple[str, ...] = ()

    @property
    def types(self) -> tuple[str, ...]:
        return (self.server_type, *self.fallback_server_types)

    @property
    def locations(self) -> tuple[str, ...]:
        return (self.location, *self.fallback_locations)
