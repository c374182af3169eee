"""Hetzner Cloud through the official hcloud library.

``api`` (the one door to hcloud: retries, error translation, action polling),
``state`` (observed state as plain data), ``observe`` (GET only), ``changes``
(pure), ``apply`` (the changes), ``provider`` (the :class:`Provider` tying them).
"""

from forge_ci.provision.hetzner.provider import HetznerProvider

__all__ = ["HetznerProvider"]
