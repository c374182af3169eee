"""The ``forge-ci`` command: argument parsing and the one top-level error handler.

Each capability registers its own subcommands (``register(sub, common)`` in its
``cli`` module); this module only wires them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from forge_ci import __version__, gha
from forge_ci._malloc import tune_malloc
from forge_ci.command import SECRET_VARS, Command, Common, Context
from forge_ci.errors import ExitCode, ForgeError

# Which module registers each verb, so a run imports only the module of its verb
# (a deploy never loads boto3). Anything else (--help, a typo, a plugin's command)
# registers them all. A new verb goes here too, or it costs every run its imports.
_VERB_MODULES = {
    "config": "config.cli", "build": "build.cli",
    "deploy": "deploy.cli", "rollback": "deploy.cli", "releases": "deploy.cli",
    "health": "deploy.cli", "doctor": "deploy.cli",
    "provision": "provision.cli", "destroy": "provision.cli",
    "backup": "backup.cli", "snapshots": "backup.cli", "verify": "backup.cli",
    "restore": "backup.cli", "drill": "backup.cli", "prune": "backup.cli",
    "keygen": "backup.cli",
    "monitor": "monitor.cli",
    "sync": "sync.command", "sync-undo": "sync.command",
    "plugins": "plugins.cli",
}
_ORDER = ("config.cli", "build.cli", "deploy.cli", "provision.cli", "backup.cli",
          "monitor.cli", "sync.command", "plugins.cli")


def _modules(verb: str | None = None) -> list[Any]:
    """Each capability's cli module (register() adds its subcommands): only the one
    that owns ``verb`` when it is known."""
    names = [_VERB_MODULES[verb]] if verb in _VERB_MODULES else list(_ORDER)
    return [importlib.import_module(f"forge_ci.{name}") for name in names]


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser of forge's own commands (only ``verb``'s module when it is one of
    them), plus ``verb`` itself when a plugin in ``forge_ci.commands`` has that name
    (PluginError when it cannot be used)."""
    parser = argparse.ArgumentParser(
        prog="forge-ci",
        description="Deploy, back up and provision Bedrock WordPress sites.",
        epilog="Exit codes: 0 done; 1 failed, nothing changed; 2 bad config or usage; "
               "3 failed after the switch and rolled back; 4 rollback failed too; "
               "monitor: 5 warning, 6 critical; 70 a bug in forge-ci; 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"forge-ci {__version__}")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="forge.yml to read (default: ./forge.yml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = Common()
    for module in _modules(verb):
        module.register(sub, common)
    if verb and verb not in sub.choices:
        from forge_ci.plugins import find

        register = find("forge_ci.commands", verb)
        if register is not None:
            register(sub, common)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command a command line names (options before it skipped), if any."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one ``forge-ci`` command; ``env`` is its process environment (default ``os.environ``)."""
    tune_malloc()  # process-wide, before any thread starts: see forge_ci._malloc
    environ = dict(os.environ if env is None else env)
    runner = gha.Runner.from_env(environ)
    for name in SECRET_VARS:
        if environ.get(name):
            runner.mask(environ[name])
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Plugins are only looked at for a command forge does not have itself.
        parser = build_parser(_command_word(argv))
    except ForgeError as e:
        runner.error(str(e), title="forge-ci")
        return ExitCode.USAGE
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # argparse has printed usage on stderr; --json still gets its one object.
        if e.code not in (0, None) and "--json" in argv:
            _print_json(runner, {"ok": False, "error": "bad command line (see usage on stderr)",
                                 "hint": "forge-ci --help", "exit_code": ExitCode.USAGE,
                                 "kind": "UsageError"})
        raise
    ctx = Context(args=args, environ=environ, runner=runner)
    func: Command = args.func
    try:
        code = func(ctx)
    except ForgeError as e:
        runner.error(str(e), title=f"forge-ci {args.command}")
        _announce(ctx, args.command, e)
        return _failed(ctx, e.to_json(), str(e))
    except KeyboardInterrupt:
        runner.error("interrupted")
        return _failed(ctx, {"ok": False, "error": "interrupted", "hint": None,
                             "exit_code": ExitCode.INTERRUPTED, "kind": "Interrupted"},
                       "interrupted")
    except Exception as e:
        # Not a ForgeError: a bug. The traceback is for us; still never print secrets.
        runner.error("internal error in forge-ci (a bug): please report it with this log")
        print(runner.redact(traceback.format_exc()), file=sys.stderr)
        _announce(ctx, args.command, e)
        return _failed(ctx, {"ok": False, "error": "internal error in forge-ci (a bug)",
                             "hint": "please report it with the log on stderr",
                             "exit_code": ExitCode.BUG, "kind": "Bug"},
                       "internal error in forge-ci (a bug)")
    _announce(ctx, args.command, None)
    if args.command in SUMMARIZED and not runner.summarized:
        runner.summary(f"### forge-ci {_verb(ctx)}: done\n")
    return code


def _announce(ctx: Context, command: str, error: BaseException | None) -> None:
    """Tell the environment's notify targets how the verb ended (never raises)."""
    from forge_ci.notify.hooks import announce

    announce(ctx, command, error)


# The verbs the actions run: each outcome of these ends in a step summary.
SUMMARIZED = frozenset({"deploy", "rollback", "backup", "restore", "provision", "destroy"})


def _verb(ctx: Context) -> str:
    environment = getattr(ctx.args, "environment", None)
    dry = " --dry-run" if ctx.dry_run else ""
    return f"{ctx.args.command}{dry}" + (f" {environment}" if environment else "")


def _failed(ctx: Context, data: dict[str, Any], text: str) -> int:
    """The one failure report: a JSON object on stdout with --json, a step summary."""
    code = int(data["exit_code"])
    if ctx.json and not ctx.emitted:
        _print_json(ctx.runner, {"command": ctx.args.command, **data})
    if not ctx.runner.summarized:
        ctx.runner.summary(f"### forge-ci {_verb(ctx)}: failed (exit {code})\n\n"
                           f"```\n{text}\n```")
    return code


def _print_json(runner: gha.Runner, data: dict[str, Any]) -> None:
    print(runner.redact(json.dumps(data, indent=2, sort_keys=True)), flush=True)


# Verbs that work on hosts and start their config the same way (see run()).
DEPLOY_VERBS = frozenset({"deploy", "rollback", "releases", "health", "doctor"})


def run() -> NoReturn:
    """The ``forge-ci`` program: :func:`main`, then the exit a normal one would be
    (threads joined, ``atexit`` handlers run, output flushed) without tearing the
    interpreter down object by object, which costs a run 20-50 ms after its work is
    done. Usage errors and ``--help`` (``SystemExit`` from argparse) exit as usual,
    and so does a run under a profiler or debugger, which writes its report after
    :func:`main` returns."""
    if _command_word(sys.argv[1:]) in DEPLOY_VERBS:
        # pydantic looks for plugins (reading every installed package's entry
        # points, ~12 ms) when the first config model is built; forge's own
        # environment has none, and its config wants none. A value set by the
        # caller is kept.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = 120  # what Python exits with when its output cannot be flushed
    os._exit(code)


if __name__ == "__main__":
    run()
