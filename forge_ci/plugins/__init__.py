"""Plugins: providers, stores, notifiers and commands from other packages.

A plugin is an entry point of an installed distribution in one of :data:`GROUPS`.
Its object (a class, a function or a module) declares the plugin API it was
written for, as ``FORGE_PLUGIN_API = 1`` (on the object or on its module) or an
``api_version`` attribute; forge loads it only when that version is
:data:`API_VERSION`.

What each group's object is (docs/plugins.md says more):

==================== ========================================================
``forge_ci.stores``    ``open(url, **opts) -> ObjectStore``; the entry point's
                       name is the URL scheme (``dir`` for ``dir://...``)
``forge_ci.providers`` a :class:`~forge_ci.provision.base.Provider` class with
                       ``from_env(config, environ, policy, log, *, site)``; the
                       name is what ``provision.provider`` says
``forge_ci.notifiers`` ``make(label, options) -> Notifier``; the name is a
                       notification type (listed and checked; ``notify:``
                       does not route to plugin types yet)
``forge_ci.commands``  ``register(sub, common)``, as forge's own ``cli``
                       modules; the name is the command
==================== ========================================================

Lazy by design: nothing here runs at start-up. Entry points are read only when
a name forge does not know itself is looked up (an unknown store scheme,
provider or command) or by ``forge-ci plugins``; only the one plugin asked for
is imported. A plugin that fails to import, or targets another API version,
raises :class:`PluginError` for that lookup only: every other command works.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forge_ci.errors import ForgeError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

API_VERSION = 1
GROUPS = ("forge_ci.providers", "forge_ci.stores", "forge_ci.notifiers", "forge_ci.commands")


class PluginError(ForgeError):
    """A plugin could not be used: it failed to import, or targets another API version."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    group: str
    value: str  # module:attribute
    distribution: str
    version: str
    api: int | None
    status: str  # ok | incompatible | broken
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "value": self.value,
                "distribution": self.distribution, "version": self.version, "api": self.api,
                "status": self.status, "message": self.message}


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` (reading metadata only; nothing is imported)."""
    from importlib.metadata import entry_points as read

    return sorted(read(group=group), key=lambda ep: ep.name)


def names(group: str) -> list[str]:
    return [ep.name for ep in entry_points(group)]


def find(group: str, name: str) -> Any | None:
    """The object of plugin ``name`` in ``group``; None when none is installed.

    Raises :class:`PluginError` when it is installed but unusable.
    """
    ep = next((e for e in entry_points(group) if e.name == name), None)
    if ep is None:
        return None
    obj, info = _load(ep)
    if info.status != "ok":
        raise PluginError(info.message, hint=_hint(info))
    return obj


def inspect_all() -> list[PluginInfo]:
    """Every installed plugin, each loaded to check it (for ``forge-ci plugins``)."""
    return [_load(ep)[1] for group in GROUPS for ep in entry_points(group)]


def _dist(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", ""
    return str(dist.metadata["Name"] or "unknown"), str(dist.version or "")


def _declared(obj: Any) -> Any:
    for holder in (obj, _module_of(obj)):
        if holder is None:
            continue
        for attr in ("FORGE_PLUGIN_API", "api_version"):
            if hasattr(holder, attr):
                return getattr(holder, attr)
    return None


def _module_of(obj: Any) -> Any:
    import sys

    name = getattr(obj, "__module__", None)
    return sys.modules.get(name) if isinstance(name, str) else None


def _load(ep: EntryPoint) -> tuple[Any, PluginInfo]:
    dist, version = _dist(ep)
    where = f"plugin {ep.name!r} ({ep.group}, from {dist} {version})".replace(" )", ")")

    def info(status: str, api: int | None, message: str = "") -> PluginInfo:
        return PluginInfo(ep.name, ep.group, ep.value, dist, version, api, status, message)

    try:
        obj = ep.load()
    except Exception as e:  # a plugin's import may raise anything: report, never crash
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return None, info("broken", None, f"{where} failed to load: {last}")
    declared = _declared(obj)
    api = declared if isinstance(declared, int) and not isinstance(declared, bool) else None
    if api is None:
        return obj, info("incompatible", None,
                         f"{where} declares no plugin API version (FORGE_PLUGIN_API)")
    if api != API_VERSION:
        return obj, info("incompatible", api,
                         f"{where} targets plugin API {api}; this forge-ci speaks "
                         f"{API_VERSION}")
    return obj, info("ok", api)


def _hint(info: PluginInfo) -> str:
    if info.status == "broken":
        return (f"fix or uninstall {info.distribution} (pip uninstall {info.distribution}); "
                "other commands are not affected")
    return (f"install a version of {info.distribution} written for plugin API "
            f"{API_VERSION}, or uninstall it")
