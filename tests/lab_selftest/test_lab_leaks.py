"""The suite-wide secret scan (tests/conftest.py) sees a registered secret anywhere
in a test's output, but not in ::add-mask:: lines or as a short fragment."""

from __future__ import annotations

import secrets

from lab import leaks


def test_registered_secret_is_found_and_masks_are_not() -> None:
    secret = secrets.token_urlsafe(24)
    leaks.register(secret)
    assert leaks.found_in(f"error: login failed for {secret}!") == [secret[:6] + "…"]
    assert leaks.found_in(f"::add-mask::{secret}\nall fine") == []
    assert leaks.found_in("nothing here") == []


def test_each_line_of_a_key_counts_but_armour_does_not() -> None:
    body = secrets.token_hex(32)
    armour = "-----{} OPENSSH PRIVATE KEY-----"
    leaks.register(f"{armour.format('BEGIN')}\n{body}\n{armour.format('END')}")
    assert leaks.found_in(f"key material {body[:40]}") == []  # a fragment is not the line
    assert leaks.found_in(f"key: {body}") == [body[:6] + "…"]
    assert leaks.found_in("-----BEGIN OPENSSH PRIVATE KEY-----") == []
