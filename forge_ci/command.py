"""What every ``forge-ci`` subcommand shares: its :class:`Context` and :class:`Common` parsers.

The entry point (:mod:`forge_ci.cli`) builds a :class:`Context` and calls the command;
each capability's ``cli`` module registers its subcommands against :class:`Common` and
reads its arguments, environment variables and config through the :class:`Context`.
Nothing here imports a capability, so no capability imports the entry point.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge_ci import gha

if TYPE_CHECKING:
    from forge_ci.config import LoadedConfig

Command = Callable[["Context"], int]


@dataclass
class Context:
    """What a command gets: its arguments, the process environment (``environ``), and where
    to report."""

    args: argparse.Namespace
    environ: Mapping[str, str]
    runner: gha.Runner
    _config: LoadedConfig | None = field(default=None, repr=False)
    # What a command learned for the notification sent after it (release, previous,
    # summary, details): see forge_ci.notify.hooks.
    outcome: dict[str, Any] = field(default_factory=dict)
    emitted: bool = False  # stdout has its one object/text: the handler adds none

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def dry_run(self) -> bool:
        return bool(getattr(self.args, "dry_run", False))

    @property
    def config_loaded(self) -> bool:
        return self._config is not None

    @property
    def config_path(self) -> Path:
        """The forge.yml this command reads (``--config``, default ``./forge.yml``)."""
        return Path(getattr(self.args, "config", None) or "forge.yml")

    def config(self, *, lenient: bool = False) -> LoadedConfig:
        """forge.yml, loaded once. A command that works on no environment passes
        ``lenient``: then no ``${VAR}`` is needed (see :func:`forge_ci.config.load`)."""
        if self._config is None:
            # Loaded here, not with the command line: the config models (pydantic) are
            # the biggest import of a run, and a deploy starts connecting before them.
            from forge_ci.config import load

            self._config = load(self.config_path, self.environ,
                                getattr(self.args, "environment", None), lenient=lenient)
            for value in self._config.secrets:
                self.runner.mask(value)
            for name in SECRET_VARS:
                if self.environ.get(name):
                    self.runner.mask(self.environ[name])
        return self._config

    def emit(self, data: Any, human: str) -> None:
        """Print ``data`` as JSON with --json, else the human text, on stdout.

        With --json, stdout carries exactly one object: ``{"ok": true, ...data}`` here,
        ``{"ok": false, "error": ...}`` from the CLI's handler when the command fails.
        """
        if self.json:
            obj = {"ok": True, **data} if isinstance(data, dict) else {"ok": True, "data": data}
            text = json.dumps(obj, indent=2, sort_keys=True)
        else:
            text = human
        self.emitted = True
        # Human text may quote a server (an error, a listing): never as workflow commands.
        print(self.runner.as_text(self.runner.redact(text)), flush=True)


# Values masked in every log line and output as soon as a command starts.
SECRET_VARS = (
    "FORGE_SSH_KEY",
    "FORGE_ADMIN_SSH_KEY",
    "FORGE_BACKUP_IDENTITY",
    "FORGE_BACKUP_SIGNING_KEY",
    "HCLOUD_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "CYBERPANEL_PASSWORD",
    "CPANEL_TOKEN",
    "FORGE_DB_PASSWORD",
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
