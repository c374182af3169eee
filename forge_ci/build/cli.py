"""``forge-ci build``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forge_ci.build.builder import build
from forge_ci.command import Common, Context
from forge_ci.config import LoadedConfig


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("build", parents=[common.config, common.json],
                       help="build the site once into an artifact directory")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="artifact directory (default: .forge/build beside forge.yml)")
    p.set_defaults(func=cmd_build)


def local_targets(loaded: LoadedConfig) -> list[str]:
    """Local environments living inside the site: never copied into a build."""
    out = []
    for config in loaded.config.environments.values():
        if config.is_local:
            target = (loaded.root / config.path).resolve()
            if target.is_relative_to(loaded.root):
                out.append(str(target.relative_to(loaded.root)))
    return out


def default_out(loaded: LoadedConfig) -> Path:
    return loaded.root / ".forge" / "build"


def cmd_build(ctx: Context) -> int:
    loaded = ctx.config()
    out = ctx.args.out or default_out(loaded)
    with ctx.runner.group("build"):
        artifact = build(loaded.root, loaded.config.build, out, environ=ctx.environ,
                         extra_exclude=local_targets(loaded), log=ctx.runner.log,
                         untrusted=ctx.runner.untrusted)
    m = artifact.manifest
    ctx.emit({"artifact": str(artifact.root), "digest": artifact.digest,
              "files": len(m.entries), "bytes": m.total_size},
             f"built {artifact.root} ({len(m.entries)} entries, {m.total_size} bytes, "
             f"digest {artifact.digest[:12]})")
    ctx.runner.set_output("artifact", str(artifact.root))
    return 0
