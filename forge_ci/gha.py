"""The GitHub Actions runner interface: log groups, errors, masks, outputs, summary.

Outside Actions (``GITHUB_ACTIONS`` unset) the same calls degrade to plain log
lines and no-ops, so every command behaves the same from a terminal.
Workflow commands are written to stdout (where the runner reads them); outputs
and the summary go to the files named by ``GITHUB_OUTPUT`` and
``GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import contextlib
import secrets as _random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


def _escape_data(text: str) -> str:
    # Workflow-command data escaping, so a message cannot end the command early.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


@dataclass
class Runner:
    """Where a command reports to. Build with :meth:`from_env`; tests pass files."""

    in_actions: bool = False
    output_file: Path | None = None
    summary_file: Path | None = None
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    masked: list[str] = field(default_factory=list)
    summarized: bool = False  # a step summary was written by this command

    @classmethod
    def from_env(cls, environ: Mapping[str, str], stream: TextIO | None = None) -> Runner:
        out = environ.get("GITHUB_OUTPUT")
        summ = environ.get("GITHUB_STEP_SUMMARY")
        return cls(
            in_actions=environ.get("GITHUB_ACTIONS") == "true",
            output_file=Path(out) if out else None,
            summary_file=Path(summ) if summ else None,
            stream=stream or sys.stderr,
        )

    # -- logging -------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Replace every registered secret value in ``text`` with ``***``."""
        for value in sorted(self.masked, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def log(self, text: str) -> None:
        print(self.redact(text), file=self.stream, flush=True)

    def mask(self, value: str) -> None:
        """Register a secret derived at run time; Actions hides it in every log."""
        for part in [value, *value.splitlines()]:
            part = part.strip()
            if len(part) < 4 or part in self.masked:
                continue
            self.masked.append(part)
            if self.in_actions:
                # Printed before any use, so the runner masks it from here on.
                print(f"::add-mask::{_escape_data(part)}", file=sys.stdout, flush=True)

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        if self.in_actions:
            print(f"::group::{_escape_data(title)}", file=sys.stdout, flush=True)
        else:
            self.log(f"== {title}")
        try:
            yield
        finally:
            if self.in_actions:
                print("::endgroup::", file=sys.stdout, flush=True)

    def error(self, message: str, *, title: str | None = None) -> None:
        message = self.redact(message)
        if self.in_actions:
            props = f" title={_escape_data(title)}" if title else ""
            print(f"::error{props}::{_escape_data(message)}", file=sys.stdout, flush=True)
        else:
            print(f"error: {message}", file=self.stream, flush=True)

    def warning(self, message: str) -> None:
        message = self.redact(message)
        if self.in_actions:
            print(f"::warning::{_escape_data(message)}", file=sys.stdout, flush=True)
        else:
            print(f"warning: {message}", file=self.stream, flush=True)

    # -- outputs and summary -------------------------------------------------

    def set_output(self, name: str, value: str) -> None:
        """Append ``name`` to ``$GITHUB_OUTPUT``; multi-line values use a fresh delimiter."""
        if self.output_file is None:
            return
        value = self.redact(value)
        with self.output_file.open("a", encoding="utf-8") as f:
            if "\n" in value:
                delim = f"forge_{_random.token_hex(8)}"
                f.write(f"{name}<<{delim}\n{value}\n{delim}\n")
            else:
                f.write(f"{name}={value}\n")

    def summary(self, markdown: str) -> None:
        self.summarized = True
        if self.summary_file is None:
            return
        with self.summary_file.open("a", encoding="utf-8") as f:
            f.write(self.redact(markdown).rstrip("\n") + "\n\n")
