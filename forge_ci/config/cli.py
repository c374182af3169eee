"""``forge-ci config check``."""

from __future__ import annotations

import argparse
from typing import Any

from forge_ci.command import Common, Context


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("config", help="check forge.yml")
    inner = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser("check", parents=[common.config, common.json],
                             help="validate forge.yml and print its environments",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    check.set_defaults(func=cmd_check)


def cmd_check(ctx: Context) -> int:
    loaded = ctx.config()
    envs = {}
    for name, config in loaded.config.environments.items():
        envs[name] = {
            "target": "local" if config.is_local else [h.label for h in config.hosts],
            "path": config.path,
            "url": config.url,
            "backup": config.backup.store if config.backup else None,
        }
    lines = [f"{loaded.path}: ok (project {loaded.config.project})"]
    for name, info in envs.items():
        lines.append(f"  {name}: {info['target']} {info['path']}")
    ctx.emit({"ok": True, "project": loaded.config.project, "environments": envs},
             "\n".join(lines))
    return 0
