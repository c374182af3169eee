"""``forge-ci config check [ENV]``."""

from __future__ import annotations

import argparse
from typing import Any

from forge_ci.command import Common, Context


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("config", help="check forge.yml")
    inner = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser(
        "check", parents=[common.config, common.json],
        help="validate forge.yml: every problem at once; with ENV, also that ENV's "
             "${VAR}s are set",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    check.add_argument("environment", nargs="?", default=None,
                       help="also require every ${VAR} of this environment (default: none; "
                            "unset variables are listed as notes)")
    check.set_defaults(func=cmd_check)


def cmd_check(ctx: Context) -> int:
    # Without an environment nothing needs a secret: structure is checked, unset
    # variables are notes. With one, that environment must be complete.
    loaded = ctx.config(lenient=ctx.args.environment is None)
    names = list(loaded.config.environments)
    if ctx.args.environment is not None:
        loaded.environment(ctx.args.environment)  # unknown name or unset ${VAR}: an error
        names = [ctx.args.environment]
    envs = {}
    for name in names:
        config = loaded.config.environments[name]
        envs[name] = {
            "target": "local" if config.is_local else [h.label for h in config.hosts],
            "path": config.path,
            "url": config.url,
            "backup": config.backup.store if config.backup else None,
        }
    unset = [{"variable": u.name, "key": u.key, "line": u.line} for u in loaded.unset]
    skipped = sorted({u.key.split(".")[1] for u in loaded.unset
                      if u.key.startswith("environments.")} - set(loaded.config.environments))
    lines = [f"{loaded.path}: ok (project {loaded.config.project})"]
    for name, info in envs.items():
        lines.append(f"  {name}: {info['target']} {info['path']}")
    for u in loaded.unset:
        lines.append(f"note: {u.note(str(loaded.path))} (needed only by commands on that "
                     "environment)")
    for name in skipped:
        lines.append(f"note: environments.{name} could not be checked fully until its "
                     "variables are set")
    ctx.emit({"project": loaded.config.project, "environments": envs, "unset": unset,
              "unchecked": skipped}, "\n".join(lines))
    return 0
