"""``forge-ci build``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from forge_ci.build.builder import build
from forge_ci.command import Common, Context
from forge_ci.config import LoadedConfig
from forge_ci.units import human_size


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("build", parents=[common.config, common.json],
                       help="build the site once into an artifact directory")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="artifact directory (default: .forge/build beside forge.yml)")
    p.set_defaults(func=cmd_build)


def local_targets(loaded: LoadedConfig) -> list[str]:
    """Local environments and file: backup stores inside the site: never copied into a
    build, whatever .gitignore says."""
    places = []
    for config in loaded.config.environments.values():
        if config.is_local:
            places.append(loaded.root / config.path)
        store = config.backup.store if config.backup else ""
        if store.startswith("file://"):
            places.append(Path(unquote(store[len("file://"):])))
        elif store.startswith("file:"):
            places.append(loaded.root / unquote(store[len("file:"):]))
    out = []
    for place in places:
        target = place.resolve()
        if target.is_relative_to(loaded.root) and target != loaded.root:
            out.append("/" + str(target.relative_to(loaded.root)))
    return out


def default_out(loaded: LoadedConfig) -> Path:
    return loaded.root / ".forge" / "build"


def cmd_build(ctx: Context) -> int:
    loaded = ctx.config(lenient=True)  # a build needs no environment's secrets
    out = ctx.args.out or default_out(loaded)
    with ctx.runner.group("build"):
        artifact = build(loaded.root, loaded.config.build, out, environ=ctx.environ,
                         extra_exclude=local_targets(loaded), secrets=loaded.secrets,
                         log=ctx.runner.log, warn=ctx.runner.warning,
                         untrusted=ctx.runner.untrusted)
    m = artifact.manifest
    info = json.loads((artifact.root / "artifact.json").read_text())
    ctx.emit({"artifact": str(artifact.root), "digest": artifact.digest,
              "files": len(m.entries), "bytes": m.total_size, "selection": info["selection"]},
             f"built {artifact.root} ({len(m.entries)} entries, {human_size(m.total_size)}, "
             f"digest {artifact.digest[:12]}; files: {info['selection']})")
    ctx.runner.set_output("artifact", str(artifact.root))
    return 0
