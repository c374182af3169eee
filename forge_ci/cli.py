"""The ``forge-ci`` command: argument parsing and the one top-level error handler.

Each capability registers its own subcommands (``register(sub, common)`` in its
``cli`` module); this module only wires them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_ci import __version__, gha
from forge_ci.config import LoadedConfig, load
from forge_ci.errors import ExitCode, ForgeError

Command = Callable[["Context"], int]


@dataclass
class Context:
    """What a command gets: its arguments, the environment, and where to report."""

    args: argparse.Namespace
    env: Mapping[str, str]
    runner: gha.Runner
    _config: LoadedConfig | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def dry_run(self) -> bool:
        return bool(getattr(self.args, "dry_run", False))

    def config(self) -> LoadedConfig:
        if self._config is None:
            path = Path(getattr(self.args, "config", None) or "forge.yml")
            self._config = load(path, self.env, getattr(self.args, "environment", None))
            for value in self._config.secrets:
                self.runner.mask(value)
            for name in SECRET_VARS:
                if self.env.get(name):
                    self.runner.mask(self.env[name])
        return self._config

    def emit(self, data: Any, human: str) -> None:
        """Print ``data`` as JSON with --json, else the human text, on stdout."""
        text = json.dumps(data, indent=2, sort_keys=True) if self.json else human
        print(self.runner.redact(text), flush=True)


# Values masked in every log line and output as soon as a command starts.
SECRET_VARS = (
    "FORGE_SSH_KEY",
    "FORGE_BACKUP_IDENTITY",
    "HCLOUD_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


class Common:
    """Parent parsers shared by subcommands."""

    def __init__(self) -> None:
        self.config = argparse.ArgumentParser(add_help=False)
        self.config.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                                 help="forge.yml to read (default: ./forge.yml)")
        self.json = argparse.ArgumentParser(add_help=False)
        self.json.add_argument("--json", action="store_true", help="machine-readable output")
        self.dry_run = argparse.ArgumentParser(add_help=False)
        self.dry_run.add_argument("--dry-run", action="store_true",
                                  help="print what would be done and change nothing")


def _modules() -> list[Any]:
    # One line per capability; each module's register() adds its subcommands.
    from forge_ci.backup import cli as backup_cli
    from forge_ci.build import cli as build_cli
    from forge_ci.config import cli as config_cli
    from forge_ci.deploy import cli as deploy_cli
    from forge_ci.provision import cli as provision_cli

    return [config_cli, build_cli, deploy_cli, provision_cli, backup_cli]


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
    env = dict(os.environ if env is None else env)
    runner = gha.Runner.from_env(env)
    for name in SECRET_VARS:
        if env.get(name):
            runner.mask(env[name])
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args=args, env=env, runner=runner)
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
