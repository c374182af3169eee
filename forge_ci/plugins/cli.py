"""``forge-ci plugins``: what is installed, and whether forge can use it."""

from __future__ import annotations

from typing import Any

from forge_ci.command import Common, Context

_HELP = """\
List the installed plugins (entry points in forge_ci.providers, forge_ci.stores,
forge_ci.notifiers and forge_ci.commands): name, group, distribution and
version, the plugin API each targets and its status (ok, incompatible, broken).
Each plugin is imported to check it; a broken one is reported, not fatal."""


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("plugins", parents=[common.json], help="list installed plugins",
                       description=_HELP)
    p.set_defaults(func=cmd_plugins)


def cmd_plugins(ctx: Context) -> int:
    from forge_ci.plugins import API_VERSION, inspect_all

    found = inspect_all()
    rows = [f"{'NAME':<16} {'GROUP':<20} {'DISTRIBUTION':<28} {'API':<4} STATUS"]
    for p in found:
        dist = f"{p.distribution} {p.version}".strip()
        api = "-" if p.api is None else str(p.api)
        rows.append(f"{p.name:<16} {p.group:<20} {dist:<28} {api:<4} {p.status}")
        if p.message:
            rows.append(f"  {p.message}")
    if not found:
        rows = ["no plugins installed"]
    human = "\n".join(rows) + f"\n(plugin API {API_VERSION})"
    ctx.emit({"api_version": API_VERSION, "plugins": [p.as_dict() for p in found]}, human)
    return 0
