"""How a missing lab prerequisite is reported: a failure, never a quiet skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ._proc import LabUnavailable

ALLOW_SKIP_VAR = "FORGE_LAB_ALLOW_SKIP"


@contextmanager
def lab_required() -> Iterator[None]:
    """Turn LabUnavailable into pytest.fail, or pytest.skip when FORGE_LAB_ALLOW_SKIP=1."""
    try:
        yield
    except LabUnavailable as exc:
        if os.environ.get(ALLOW_SKIP_VAR) == "1":
            pytest.skip(f"{exc} (skipped: {ALLOW_SKIP_VAR}=1)")
        pytest.fail(
            f"{exc}\nLab tests never skip on their own; set {ALLOW_SKIP_VAR}=1 to skip them.",
            pytrace=False,
        )
