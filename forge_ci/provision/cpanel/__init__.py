"""A cPanel account through UAPI (and API 2 where UAPI has no equivalent).

``api`` is the one door: requests, retries and the translation of cPanel's
error forms into :mod:`forge_ci.provision.errors`. docs/providers-panels.md
lists what the API can and cannot do.
"""

from forge_ci.provision.cpanel.api import CpanelApi, DbRestrictions, DomainData, ShellAccess

__all__ = ["CpanelApi", "DbRestrictions", "DomainData", "ShellAccess"]
