"""`forge-ci monitor` against a real site: WordPress deployed by forge over real SSH to
the lab's nginx + PHP-FPM + MariaDB, its disk and deploy lock read over SSH; then
PHP-FPM and nginx stop, and the site is reported down."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from lab.site import WordPressSite
from lab.sshd import SshHost

from forge_ci.errors import ExitCode
from tests.deploy.sshsite import SshSite


@pytest.fixture
def ssh_site(lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost) -> SshSite:
    site = SshSite.create(lab_dir, wp_site(), [sshd_host])
    # Thresholds this test is not about are set so the lab machine's own disk and load
    # cannot decide it (a bench filling the disk to 19.9% free turned it into a warning).
    site.configure("    monitor:\n      disk_min_free: 0.5%\n      response_max: 60s\n")
    return site


def monitor(site: SshSite, state: Path) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = site.forge("monitor", "production", "--json", "--state", str(state))
    return rc, json.loads(out.getvalue())


def test_a_real_site_is_healthy_then_down(ssh_site: SshSite, lab_dir: Path) -> None:
    assert ssh_site.forge("deploy", "production") == 0, ssh_site.site.logs()
    rc, report = monitor(ssh_site, lab_dir / "state.json")
    checks = {str(c["name"]).split(" ")[0]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert rc == ExitCode.OK, report
    assert set(checks) == {"http", "disk", "lock"}
    host = ssh_site.hosts[0]
    assert checks["disk"]["name"] == f"disk {host.user}@{host.host}:{host.port}"
    assert "% free on" in checks["disk"]["detail"] and checks["lock"]["detail"] == "free"

    ssh_site.site.stop()
    rc, report = monitor(ssh_site, lab_dir / "state.json")
    assert rc == ExitCode.MONITOR_CRITICAL
    assert report["alerts"] == [f"http {ssh_site.site.url}/"]
