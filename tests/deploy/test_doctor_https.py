"""doctor reads what forge-https last said about the certificate (issue: HTTPS that
cannot be issued yet must be reported, with what to fix)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from forge_ci.config.models import EnvironmentConfig
from forge_ci.deploy.doctor import HostFacts, https_findings

BASE = HostFacts(missing_tools=(), path="dir", nearest="/srv/site", writable=True,
                 free_kb=10 << 20, shared=(), site_paths=(), current=True, forge=True)


def _config(url: str, **extra: object) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate(
        {"path": "/srv/site", "url": url, "hosts": [{"host": "203.0.113.10"}], **extra})


@pytest.mark.parametrize(("line", "status", "words"), [
    ("ok 2026-12-06T10:00:00Z example.org www.example.org", "ok", "example.org"),
    ("pending 2026-12-06T10:00:00Z example.org", "warn", "DNS records of example.org"),
    ("failed 2026-12-06T10:00:00Z example.org", "fail", "journalctl -u forge-https"),
    ("off 2026-12-06T10:00:00Z example.org", "warn", "provision again"),
    ("", "warn", "not managed by forge"),
])
def test_each_certificate_state_is_reported_with_what_to_do(line: str, status: str,
                                                            words: str) -> None:
    [finding] = https_findings("deploy@a:22", dataclasses.replace(BASE, https=line),
                               _config("https://example.org"))
    assert finding.check == "https" and finding.status == status
    assert words in finding.detail + finding.hint


def test_no_certificate_is_expected_for_http_or_acme_off() -> None:
    facts = dataclasses.replace(BASE, https="")
    assert https_findings("h", facts, _config("http://example.org")) == []
    assert https_findings("h", facts, _config("https://example.org",
                                              https={"acme": "off"})) == []


def test_monitor_reports_a_pending_certificate_and_stays_quiet_without_forge_https(
        tmp_path: Path) -> None:
    from forge_ci.monitor.checks import check_certificate
    from forge_ci.remote import LocalHost
    from forge_ci.tls import Severity

    status = tmp_path / "status"
    config = _config("https://example.org")
    with LocalHost() as host:
        assert check_certificate(host, config, str(status)) == []  # not forge's: TLS check
        status.write_text("pending 2026-12-06T10:00:00Z example.org\n")
        [check] = check_certificate(host, config, str(status))
        assert check.severity is Severity.WARNING and "DNS records of example.org" in check.detail
        status.write_text("ok 2026-12-06T10:00:00Z example.org\n")
        [check] = check_certificate(host, config, str(status))
        assert check.severity is Severity.OK
