"""A reader of a step's log the way the GitHub Actions runner reads it for commands.

It follows the runner's rules (``ActionCommandManager`` / ``ActionCommand`` in
actions/runner): a line is ``::name props::data`` after leading whitespace, or
contains ``##[name props]data`` anywhere; names are compared without case;
``::stop-commands::TOKEN`` ignores every command until a line whose command is
TOKEN. Tests use it to ask "what would the runner have done with this log?".
"""

from __future__ import annotations

import re

REGISTERED = {
    "add-mask", "add-matcher", "add-path", "debug", "echo", "endgroup", "error", "group",
    "notice", "remove-matcher", "save-state", "set-env", "set-output", "stop-commands",
    "warning",
}


def _parse(line: str, registered: set[str]) -> tuple[str, str] | None:
    msg = line.lstrip()
    if msg.startswith("::"):
        end = msg.find("::", 2)
        if end >= 0:
            name = msg[2:end].strip().split(" ", 1)[0].lower()
            if name in registered:
                return name, msg[end + 2:]
    m = re.search(r"##\[([^\]]*)\]", line)
    if m:
        name = m.group(1).split(" ", 1)[0].lower()
        if name in registered:
            return name, line[m.end():]
    return None


def commands(log: str) -> list[tuple[str, str]]:
    """Every workflow command the runner would carry out, in order (resumes included)."""
    registered = set(REGISTERED)
    stopped: str | None = None
    done: list[tuple[str, str]] = []
    for line in re.split(r"\r\n|\r|\n", log):
        cmd = _parse(line, registered)
        if cmd is None:
            continue
        name, data = cmd
        if stopped is not None:
            if name == stopped:
                registered.discard(stopped)
                stopped = None
                done.append(("resume", name))
            continue
        if name == "stop-commands":
            stopped = data.lower()
            registered.add(stopped)
        done.append(cmd)
    return done
