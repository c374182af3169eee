"""Health checks against the real site, with retries inside a time bound.

The release marker (``web/forge-release.php``, written into every release) is
served by PHP, so seeing the new id there proves PHP runs the new code, not a
cached old one. Configured checks (status, contains) run after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests

from forge_ci.config.models import HealthCheck

MARKER_PATH = "web/forge-release.php"
MARKER_URL = "forge-release.php"


def marker_php(release_id: str) -> bytes:
    # Plain PHP, no WordPress: it answers even when the theme or a plugin is broken,
    # and only says which release PHP is executing.
    return (
        "<?php\n"
        "header('Content-Type: text/plain; charset=utf-8');\n"
        "header('Cache-Control: no-store');\n"
        f"echo 'forge-release:{release_id}', \"\\n\";\n"
    ).encode()


@dataclass(frozen=True)
class Policy:
    timeout: float = 60.0  # total time allowed for all checks to pass
    interval: float = 1.0  # pause between attempts
    request_timeout: float = 10.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    seconds: float


def _probe(session: requests.Session, check: HealthCheck, timeout: float) -> str | None:
    """None when the check passes, else why not."""
    try:
        r = session.get(check.url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as e:
        return f"{check.url}: {e.__class__.__name__}"
    if r.status_code != check.status:
        return f"{check.url}: HTTP {r.status_code}, expected {check.status}"
    if check.contains is not None and check.contains not in r.text:
        return f"{check.url}: response does not contain {check.contains!r}"
    return None


def run_checks(checks: Sequence[HealthCheck], policy: Policy,
               log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Retry until every check passes in one round, or the time bound runs out."""
    start = time.monotonic()
    last = "no checks"
    with requests.Session() as session:
        session.headers["User-Agent"] = "forge-ci health check"
        attempt = 0
        while True:
            attempt += 1
            failures = [f for c in checks if (f := _probe(session, c, policy.request_timeout))]
            elapsed = time.monotonic() - start
            if not failures:
                return Outcome(True, f"healthy after {attempt} attempt(s)", elapsed)
            last = "; ".join(failures)
            if elapsed + policy.interval > policy.timeout:
                return Outcome(False, f"unhealthy after {attempt} attempt(s): {last}", elapsed)
            if attempt == 1 or attempt % 5 == 0:
                log(f"  waiting: {last}")
            sleep(policy.interval)


def marker_check(url: str, release_id: str) -> HealthCheck:
    return HealthCheck(url=url.rstrip("/") + "/" + MARKER_URL, status=200,
                       contains=f"forge-release:{release_id}")
