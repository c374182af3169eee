"""The ``forge-ci`` command: argument parsing and the one top-level error handler.

Each capability registers its own subcommands (``register(sub, common)`` in its
``cli`` module); this module only wires them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from forge_ci import __version__, gha
from forge_ci._malloc import tune_malloc
from forge_ci.command import SECRET_VARS, Command, Common, Context
from forge_ci.errors import ExitCode, ForgeError


def _modules() -> list[Any]:
    # One line per capability; each module's register() adds its subcommands.
    from forge_ci.backup import cli as backup_cli
    from forge_ci.build import cli as build_cli
    from forge_ci.config import cli as config_cli
    from forge_ci.deploy import cli as deploy_cli
    from forge_ci.provision import cli as provision_cli
    from forge_ci.sync import command as sync_cli

    return [config_cli, build_cli, deploy_cli, provision_cli, backup_cli, sync_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forge-ci",
        description="Deploy, back up and provision Bedrock WordPress sites.",
        epilog="Exit codes: 0 done; 1 failed, nothing changed; 2 bad config or usage; "
               "3 failed after the switch and rolled back; 4 rollback failed too.",
    )
    parser.add_argument("--version", action="version", version=f"forge-ci {__version__}")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="forge.yml to read (default: ./forge.yml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = Common()
    for module in _modules():
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one ``forge-ci`` command; ``env`` is its process environment (default ``os.environ``)."""
    tune_malloc()  # process-wide, before any thread starts: see forge_ci._malloc
    environ = dict(os.environ if env is None else env)
    runner = gha.Runner.from_env(environ)
    for name in SECRET_VARS:
        if environ.get(name):
            runner.mask(environ[name])
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args=args, environ=environ, runner=runner)
    func: Command = args.func
    try:
        return func(ctx)
    except ForgeError as e:
        runner.error(str(e), title=f"forge-ci {args.command}")
        return e.exit_code
    except KeyboardInterrupt:
        runner.error("interrupted")
        return 130
    except Exception:
        # Not a ForgeError: a bug. The traceback is for us; still never print secrets.
        runner.error("internal error in forge-ci (a bug): please report it with this log")
        print(runner.redact(traceback.format_exc()), file=sys.stderr)
        return ExitCode.BUG


if __name__ == "__main__":
    raise SystemExit(main())
