"""The PHP oracle, one process for the whole session (see php_oracle.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .php_oracle import Php


@pytest.fixture(scope="session")
def php() -> Iterator[Php]:
    oracle = Php()
    yield oracle
    oracle.close()
