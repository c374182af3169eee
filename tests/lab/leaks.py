"""Secrets the lab hands out, so the suite can check no test's output shows them.

Fixtures register every secret they create (deploy keys, database passwords);
tests/conftest.py scans each test's captured stdout, stderr and log for them and
fails the test that printed one. `::add-mask::` lines are how secrets are
registered with the Actions runner, which never shows them, so they are skipped.
"""

from __future__ import annotations

_SECRETS: set[str] = set()


def register(secret: str) -> None:
    for part in [secret, *secret.splitlines()]:
        part = part.strip()
        # Short fragments and PEM armour lines would match innocent text.
        if len(part) >= 16 and "-----" not in part:
            _SECRETS.add(part)


def found_in(text: str) -> list[str]:
    """The registered secrets that appear in `text`, shortened for the message."""
    if not _SECRETS or not text:
        return []
    visible = "\n".join(x for x in text.splitlines() if "::add-mask::" not in x)
    return [s[:6] + "…" for s in _SECRETS if s in visible]
