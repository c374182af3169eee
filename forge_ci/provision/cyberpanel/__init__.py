"""CyberPanel (OpenLiteSpeed) through its two HTTP APIs.

``api`` is the one door: every request, its retries and the translation of
CyberPanel's error forms into :mod:`forge_ci.provision.errors` happen there.
docs/providers-panels.md lists what the API can and cannot do.
"""

from forge_ci.provision.cyberpanel.api import ChildDomain, CyberPanelApi, Database, Website

__all__ = ["ChildDomain", "CyberPanelApi", "Database", "Website"]
