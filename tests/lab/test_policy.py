"""Missing lab prerequisites fail the test unless skipping is allowed explicitly."""

from __future__ import annotations

import pytest
from lab import LabUnavailable, require_binary
from lab.policy import lab_required


def test_missing_binary_is_named() -> None:
    with pytest.raises(LabUnavailable, match="no-such-forge-binary"):
        require_binary("no-such-forge-binary")


def test_missing_prerequisite_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORGE_LAB_ALLOW_SKIP", raising=False)
    with pytest.raises(pytest.fail.Exception, match="never skip"), lab_required():
        raise LabUnavailable("lab needs `nginx`")


def test_skip_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_LAB_ALLOW_SKIP", "1")
    with pytest.raises(pytest.skip.Exception), lab_required():
        raise LabUnavailable("lab needs `nginx`")
