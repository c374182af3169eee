"""What provisioning reports about HTTPS after its verified connection (bootstrap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_ci.provision.bootstrap import https_advice, https_status
from forge_ci.provision.errors import BootstrapError
from forge_ci.remote.local import LocalHost

PENDING = "pending 2026-12-06T10:00:00Z example.com www.example.com"


def _server(tmp_path: Path, script_body: str) -> tuple[Path, Path]:
    status = tmp_path / "status"
    status.write_text(PENDING + "\n")
    script = tmp_path / "forge-https"
    script.write_text(f"#!/bin/sh\n{script_body}\n")
    script.chmod(0o755)
    return status, script


def test_a_rerun_retries_a_pending_certificate(tmp_path: Path) -> None:
    status, script = _server(
        tmp_path, f"echo 'ok 2026-12-06T11:00:00Z example.com' > {tmp_path}/status")
    with LocalHost() as host:
        first_boot = https_status(host, retry_pending=False, sudo="env", script=str(script),
                                  status_path=str(status))
        assert first_boot == PENDING  # cloud-init ran it moments ago: not again
        line = https_status(host, retry_pending=True, sudo="env", script=str(script),
                            status_path=str(status))
    assert line == "ok 2026-12-06T11:00:00Z example.com"
    assert https_advice(line, "203.0.113.7") is None


def test_still_pending_keeps_the_line_and_a_failure_is_an_error(tmp_path: Path) -> None:
    status, script = _server(tmp_path, "exit 3")
    with LocalHost() as host:
        assert https_status(host, retry_pending=True, sudo="env", script=str(script),
                            status_path=str(status)) == PENDING
        script.write_text("#!/bin/sh\necho 'nginx rejected it' >&2\nexit 1\n")
        with pytest.raises(BootstrapError, match=r"forge-https failed .* nginx rejected it"):
            https_status(host, retry_pending=True, sudo="env", script=str(script),
                         status_path=str(status))
        assert https_status(host, retry_pending=False, sudo="env", script=str(script),
                            status_path=str(tmp_path / "absent")) is None


def test_pending_advice_names_the_records_and_the_address() -> None:
    advice = https_advice(PENDING, "203.0.113.7")
    assert advice is not None
    assert "Point the DNS A/AAAA records of example.com www.example.com at 203.0.113.7" in advice
    assert "serves HTTP until then" in advice
    assert https_advice("off 2026-12-06T10:00:00Z example.com", "203.0.113.7") is None
    failed = https_advice("failed 2026-12-06T10:00:00Z example.com", "203.0.113.7")
    assert failed is not None and "last.log" in failed
