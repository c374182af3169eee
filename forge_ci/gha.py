"""The GitHub Actions runner interface: log groups, errors, masks, outputs, summary.

Outside Actions (``GITHUB_ACTIONS`` unset) the same calls degrade to plain log
lines and no-ops, so every command behaves the same from a terminal.
Workflow commands are written to stdout (where the runner reads them); outputs
and the summary go to the files named by ``GITHUB_OUTPUT`` and
``GITHUB_STEP_SUMMARY``.

Text forge did not write (hook and build output, a server's stderr) is shown
with :meth:`Runner.untrusted`: in Actions it is fenced by ``::stop-commands::``
with a random token chosen after reading the text, so no line of it can become
a workflow command (``::add-mask::``, ``::set-output``, ``::error``, ``##[...]``).
:meth:`Runner.log` fences a message the same way if a line of it could be read
as a command, so a server's words inside one of our messages stay words too.
"""

from __future__ import annotations

import contextlib
import secrets as _random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from forge_ci.progress import DEFAULT_INTERVAL, Progress


def _escape_data(text: str) -> str:
    # Workflow-command data escaping, so a message cannot end the command early.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def could_be_command(line: str) -> bool:
    """Whether the Actions runner might read ``line`` as a workflow command.

    It takes ``::name ...::data`` after leading whitespace, and the older
    ``##[name ...]data`` anywhere in a line.
    """
    return line.lstrip().startswith("::") or "##[" in line


def _seconds(text: str | None) -> float:
    try:
        value = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def _draw() -> str:
    return _random.token_hex(16)


def stop_token(text: str, draw: Callable[[], str] = _draw) -> str:
    """A random resume token for ``::stop-commands::`` that ``text`` does not contain.

    The runner resumes on ``::<token>::`` (or ``##[<token>]``), compared without
    case, so the token is checked against the text it will fence.
    """
    folded = text.casefold()
    while True:
        token = f"forge-text-{draw()}"
        if token not in folded:
            return token


@dataclass
class Runner:
    """Where a command reports to. Build with :meth:`from_env`; tests pass files."""

    in_actions: bool = False
    output_file: Path | None = None
    summary_file: Path | None = None
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    masked: list[str] = field(default_factory=list)
    summarized: bool = False  # a step summary was written by this command
    # Seconds between progress lines in CI (FORGE_PROGRESS_SECONDS); tests pass a clock.
    progress_interval: float = DEFAULT_INTERVAL
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_env(cls, environ: Mapping[str, str], stream: TextIO | None = None) -> Runner:
        out = environ.get("GITHUB_OUTPUT")
        summ = environ.get("GITHUB_STEP_SUMMARY")
        return cls(
            in_actions=environ.get("GITHUB_ACTIONS") == "true",
            output_file=Path(out) if out else None,
            summary_file=Path(summ) if summ else None,
            stream=stream or sys.stderr,
            progress_interval=_seconds(environ.get("FORGE_PROGRESS_SECONDS")),
        )

    # -- logging -------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Replace every registered secret value in ``text`` with ``***``."""
        for value in sorted(self.masked, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def log(self, text: str) -> None:
        print(self.as_text(self.redact(text)), file=self.stream, flush=True)

    def as_text(self, text: str) -> str:
        """``text`` as it may be printed: in Actions, fenced if a line of it could be
        read as a workflow command (see :meth:`untrusted`), else unchanged."""
        if self.in_actions and any(could_be_command(line) for line in text.splitlines()):
            token = stop_token(text)
            return f"::stop-commands::{token}\n{text}\n::{token}::"
        return text

    def untrusted(self, lines: Iterable[str], *, indent: str = "    ") -> None:
        """Show text forge did not write (hook, build or server output) as plain text.

        Each line is indented; in Actions the block is fenced so none of it can issue
        a workflow command. Secrets are redacted as in :meth:`log`.
        """
        text = self.redact("\n".join(lines))
        shown = "\n".join(indent + line for line in text.splitlines())
        if not shown:
            return
        if self.in_actions:
            token = stop_token(shown)
            shown = f"::stop-commands::{token}\n{shown}\n::{token}::"
        # One write to the same stream as the text, so the fence and the text stay in order.
        print(shown, file=self.stream, flush=True)

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

    def progress(self, what: str, *, files: int | None = None,
                 nbytes: int | None = None) -> Progress:
        """Progress of long work: a live line on a terminal, else a line every few seconds."""
        live = None
        if not self.in_actions and self.stream.isatty():
            live = self.stream
        return Progress(what, files=files, nbytes=nbytes, write=self.log, live=live,
                        interval=self.progress_interval, clock=self.clock)

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
