"""Health checks against the real site, with retries inside a time bound.

The release marker (``web/forge-release.php``, written into every release) is
served by PHP, so seeing the new id there proves PHP runs the new code, not a
cached old one. Configured checks (status, contains) run after it.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forge_ci.config.models import HealthCheck
from forge_ci.remote.base import Host, sh

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
class HealthPolicy:
    timeout: float = 60.0  # total time allowed for all checks to pass
    interval: float = 1.0  # pause between attempts
    request_timeout: float = 10.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    seconds: float


class _Client:
    """Plain http.client with one kept-alive connection per origin.

    Not requests: its import alone costs a noticeable part of a redeploy, and a
    health check needs only GET, a status and a body.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def get(self, url: str) -> tuple[int, str]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
            conn = self._conns.get(key) or self._connect(parts)
            self._conns[key] = conn
            try:
                conn.request("GET", path, headers={"User-Agent": "forge-ci health check",
                                                   "Cache-Control": "no-cache"})
                resp = conn.getresponse()
                body = resp.read(4 << 20).decode("utf-8", "replace")
                if resp.will_close:
                    self._drop(key)
                return resp.status, body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(key)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            import ssl  # only here: most of a deploy never needs it

            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _drop(self, key: tuple[str, str]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)


Fetch = Callable[[str], tuple[int, str]]
_STATUS = "\n__forge_status__:"


def fetch_on(host: Host, timeout: float) -> Fetch:
    """GET through ``curl`` on the target itself: for a preview route that listens on
    the server's loopback, so the release is checked without being exposed."""

    def get(url: str) -> tuple[int, str]:
        r = host.run(f"curl -sS --max-time {int(timeout)} -H 'Cache-Control: no-cache' "
                     f"-w {sh(_STATUS + '%{http_code}')} -- {sh(url)}", check=False,
                     timeout=timeout + 15)
        body, _, code = r.text.rpartition(_STATUS)
        if r.status != 0 or not code.strip().isdigit():
            raise OSError(f"curl on {host.name}: {r.tail(1) or f'exit {r.status}'}")
        return int(code), body

    return get


def _probe(fetch: Fetch, check: HealthCheck) -> str | None:
    """None when the check passes, else why not."""
    try:
        status, body = fetch(check.url)
    except (OSError, http.client.HTTPException) as e:
        detail = str(e) if str(e) else e.__class__.__name__
        return f"{check.url}: {detail}"
    if status != check.status:
        return f"{check.url}: HTTP {status}, expected {check.status}"
    if check.contains is not None and check.contains not in body:
        return f"{check.url}: response does not contain {check.contains!r}"
    return None


def run_checks(checks: Sequence[HealthCheck], policy: HealthPolicy,
               log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
               fetch: Fetch | None = None, live: bool = False) -> Outcome:
    """Retry until every check passes in one round, or the time bound runs out.
    ``fetch`` replaces the HTTP client (see :func:`fetch_on`).

    ``live``: visitors see this release now. Once the release marker shows PHP
    serves it, a check that still fails is the release's fault, not a slow
    switch: after one confirming round the outcome is a failure at once, so a
    bad release is rolled back in well under a second instead of staying up
    for the whole time bound.
    """
    start = time.monotonic()
    client = _Client(policy.request_timeout)
    get = fetch or client.get
    attempt = 0
    confirmed_bad = 0
    try:
        while True:
            attempt += 1
            results = [(c, _probe(get, c)) for c in checks]
            failures = [f for _, f in results if f]
            elapsed = time.monotonic() - start
            if not failures:
                return Outcome(True, f"healthy after {attempt} attempt(s)", elapsed)
            last = "; ".join(failures)
            marker_ok = any(_is_marker(c) and not f for c, f in results)
            if live and marker_ok and not any(f and _is_marker(c) for c, f in results):
                confirmed_bad += 1
                if confirmed_bad >= 2:
                    return Outcome(False, f"unhealthy while serving the new release: {last}",
                                   elapsed)
                sleep(min(policy.interval, 0.2))
                continue
            if elapsed + policy.interval > policy.timeout:
                return Outcome(False, f"unhealthy after {attempt} attempt(s): {last}", elapsed)
            if attempt == 1 or attempt % 5 == 0:
                log(f"  waiting: {last}")
            sleep(policy.interval)
    finally:
        client.close()


def _is_marker(check: HealthCheck) -> bool:
    return check.url.endswith("/" + MARKER_URL) and (check.contains or "").startswith(
        "forge-release:")


def marker_check(url: str, release_id: str) -> HealthCheck:
    return HealthCheck(url=url.rstrip("/") + "/" + MARKER_URL, status=200,
                       contains=f"forge-release:{release_id}")
