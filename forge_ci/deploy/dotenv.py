"""The release's ``.env``: values written so PHP and a shell read back exactly what was set.

Two readers matter. Bedrock reads the file with vlucas/phpdotenv (v5); people
and scripts ``source`` it in a shell (``set -a; . ./.env``). Their rules overlap
only in part, so each value gets the first notation both read literally:

- double quotes, escaping ``\\``, ``"`` and ``$`` (both undo exactly these three);
  newlines stay raw (phpdotenv joins a multi-line double-quoted value with
  ``\\n``; a shell keeps them). Not for a value with a backtick: a shell runs
  it, and phpdotenv rejects the ``\\``` escape a shell would need;
- single quotes, for a value with a backtick: both take everything literally
  up to the next ``'``. Not for a value holding ``'``, a newline (phpdotenv
  has no multi-line single quotes) or ``="`` (phpdotenv would take the line
  for the start of a multi-line value).

A value neither notation carries (a carriage return, which phpdotenv reads as
a line break; a NUL; a backtick together with ``'`` or a newline; several
lines ending in ``=``, whose closing line phpdotenv mistakes for an opening
one) is refused
by name before anything is touched, never written in a form one reader
would change or run.
"""

from __future__ import annotations

from collections.abc import Mapping

from forge_ci.errors import ConfigError

HEADER = "# Written by forge-ci for this release. Do not edit on the server."
_DOUBLE = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$"})


def quote(value: str) -> str | None:
    """``value`` as both readers read it back, or None when no notation can."""
    if "\r" in value or "\0" in value:
        return None
    if "`" not in value:
        if "\n" in value and value.endswith("="):
            return None  # the closing line would end '="': phpdotenv reads on past it
        return '"' + value.translate(_DOUBLE) + '"'
    if "'" in value or "\n" in value or '="' in value:
        return None
    return f"'{value}'"


def _why(value: str) -> str:
    if "\r" in value:
        return "holds a carriage return (\\r), which PHP's dotenv reads as a line break"
    if "\0" in value:
        return "holds a NUL byte"
    if "`" not in value:
        return ("has several lines and ends with '=': PHP's dotenv would not see where "
                "it ends")
    return ("holds a backtick together with a quote ('), a newline or '=\"': no .env "
            "notation keeps it literal for both PHP's dotenv and a shell")


def check(environment: str, values: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` naming the first key whose value cannot be written."""
    for key, value in values.items():
        if quote(value) is None:
            hint = "change that value: forge never writes a .env that a reader would change or run"
            if "\r" in value:
                hint += " (a carriage return is usually a Windows line ending pasted with a secret)"
            raise ConfigError(f"the value {_why(value)}",
                              key=f"environments.{environment}.dotenv.{key}", hint=hint)


def render(values: Mapping[str, str]) -> bytes:
    """The file's bytes; :func:`check` first (a value it refuses raises ValueError here)."""
    lines = [HEADER]
    for key, value in values.items():
        quoted = quote(value)
        if quoted is None:
            raise ValueError(f"{key}: value cannot be written; call check() first")
        lines.append(f"{key}={quoted}")
    return ("\n".join(lines) + "\n").encode()
