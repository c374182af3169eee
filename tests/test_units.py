"""Sizes for people: one helper, binary units."""

from __future__ import annotations

import pytest

from forge_ci.units import human_size


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (3_006_000_000, "2.8 GiB"), (5 * 1024**4, "5.0 TiB"), (3 * 1024**6, "3072.0 PiB"),
])
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text
