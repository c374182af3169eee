"""Health checks against the real site, with retries inside a time bound.

The release marker (``web/forge-release.php``, written into every release) is
served by PHP, so seeing the new id there proves PHP runs the new code, not a
cached old one. Configured checks (status, contains) run after it.
"""

from __future__ import annotations

import functools
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forge_ci.config.models import HealthCheck
from forge_ci.remote.base import Host, sh
from forge_ci.remote.dial import connect

if TYPE_CHECKING:
    import http.client

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
    interval: float = 1.0  # longest pause between attempts
    # The first pause; each next one doubles up to ``interval``: a switch that PHP
    # takes a moment to see is passed within tens of milliseconds, not a second.
    first_interval: float = 0.05
    request_timeout: float = 10.0
    # CA bundle for https checks (the runner's SSL_CERT_FILE); None: the system's.
    cafile: str | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    seconds: float


def preload() -> None:
    """Import what the checks need (``http.client``, which loads ``ssl`` and the
    email parser: ~10 ms), for a caller with time to spare while it waits on the
    network; the checks import it themselves otherwise."""
    import http.client  # noqa: F401


class _Client:
    """Plain http.client with one kept-alive connection per origin.

    Not requests: its import alone costs a noticeable part of a redeploy, and a
    health check needs only GET, a status and a body.
    """

    def __init__(self, timeout: float, cafile: str | None = None) -> None:
        self.cafile = cafile
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def get(self, url: str) -> tuple[int, str]:
        import http.client

        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:
            reused = key in self._conns
            conn = self._conns.get(key) or self._connect(parts)
            self._conns[key] = conn
            try:
                conn.request("GET", path, headers={"User-Agent": "forge-ci health check",
                                                   "Cache-Control": "no-cache"})
                resp = conn.getresponse()
                body = resp.read(4 << 20).decode("utf-8", "replace")
            except BaseException as e:
                # Whatever went wrong, this connection is spent: a half-sent request
                # leaves it refusing every later one ("Request-sent"), hiding the
                # real error and failing a server that has come up since.
                self._drop(key)
                stale = isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError,
                                       BrokenPipeError))
                if reused and stale:
                    continue  # a kept-alive connection the server closed: once, afresh
                raise
            if resp.will_close:
                self._drop(key)
            return resp.status, body

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        import http.client

        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            import ssl  # only here: most of a deploy never needs it

            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=ssl.create_default_context(cafile=self.cafile))
        return _plain_connection()(host, port, timeout=self.timeout)

    def _drop(self, key: tuple[str, str]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)


@functools.cache
def _plain_connection() -> type[http.client.HTTPConnection]:
    """Plain http connecting as :func:`forge_ci.remote.dial.connect` does: an ASCII
    name (or an address) is resolved without loading Python's IDNA codec, which a
    str host makes the resolver load first, on the switch's critical path. Made
    when first needed: http.client loads with it."""
    import http.client

    class _HTTPConnection(http.client.HTTPConnection):
        def __init__(self, host: str, port: int | None, timeout: float) -> None:
            super().__init__(host, port, timeout=timeout)
            self._seconds = timeout

        def connect(self) -> None:
            sys.audit("http.client.connect", self, self.host, self.port)
            self.sock = connect(self.host, self.port, self._seconds)

    return _HTTPConnection


Fetch = Callable[[str], tuple[int, str]]
_STATUS = "\n__forge_status__:"


def fetch_on(host: Host, timeout: float, connect_to: str | None = None) -> Fetch:
    """GET through ``curl`` on the target itself: for a preview route that listens on
    the server's loopback, so the release is checked without being exposed, and for
    checking each host's own web server behind a load balancer. ``connect_to`` is a
    curl ``--connect-to`` rule (see :func:`connect_rule`)."""
    route = f"--connect-to {sh(connect_to)} " if connect_to else ""

    def get(url: str) -> tuple[int, str]:
        r = host.run(f"curl -sS --max-time {int(timeout)} -H 'Cache-Control: no-cache' "
                     f"{route}-w {sh(_STATUS + '%{http_code}')} -- {sh(url)}", check=False,
                     timeout=timeout + 15)
        body, _, code = r.text.rpartition(_STATUS)
        if r.status != 0 or not code.strip().isdigit():
            raise OSError(f"curl on {host.name}: {r.tail(1) or f'exit {r.status}'}")
        return int(code), body

    return get


def connect_rule(url: str, address: str) -> str:
    """A curl ``--connect-to`` rule sending requests for ``url``'s origin to
    ``address`` at the same port: the Host header and TLS name stay the URL's."""
    parts = urllib.parse.urlsplit(url)
    name = parts.hostname or ""
    if ":" in name:
        name = f"[{name}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{name}:{port}:{address}:"


def _probe(fetch: Fetch, check: HealthCheck) -> str | None:
    """None when the check passes, else why not."""
    import http.client

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
               fetch: Fetch | None = None, live: bool = False, rounds: int = 1,
               where: str = "") -> Outcome:
    """Retry until every check passes in ``rounds`` rounds in a row, or the time
    bound runs out: the first attempt at once, then after pauses growing from
    ``policy.first_interval`` to ``policy.interval``. ``fetch`` replaces the HTTP
    client (see :func:`fetch_on`); ``where`` names the host (or route) in the log
    and in a failed outcome. Every failed attempt is logged.

    ``rounds`` > 1 is for a URL behind a load balancer: consecutive rounds reach
    different backends, so one failing host cannot hide behind a lucky request.

    ``live``: visitors see this release now. Once the release marker has shown
    that PHP serves it, any failure is the release's fault, not a slow switch:
    the outcome is a failure at once, so a bad release is rolled back in well
    under a second instead of staying up for the whole time bound, and a
    balancer cannot dodge the check by sending the retry elsewhere.
    """
    start = time.monotonic()
    client = _Client(policy.request_timeout, policy.cafile)
    get = fetch or client.get
    prefix = f"{where}: " if where else ""
    attempt = passed = 0
    serving = False  # the marker has shown the new release
    pause = min(policy.first_interval, policy.interval)
    try:
        while True:
            attempt += 1
            results = [(c, _probe(get, c)) for c in checks]
            failures = [f for _, f in results if f]
            elapsed = time.monotonic() - start
            serving = serving or any(_is_marker(c) and not f for c, f in results)
            if not failures:
                passed += 1
                if passed >= rounds:
                    tail = f", {rounds} rounds in a row" if rounds > 1 else ""
                    return Outcome(True, f"healthy after {attempt} attempt(s){tail}", elapsed)
                continue
            passed = 0
            last = "; ".join(failures)
            log(f"  {prefix}attempt {attempt} failed: {last}")
            if live and serving:
                return Outcome(False, f"{prefix}unhealthy while serving the new release: "
                                      f"{last}", elapsed)
            if elapsed + pause > policy.timeout:
                return Outcome(False, f"{prefix}unhealthy after {attempt} attempt(s): {last}",
                               elapsed)
            sleep(pause)
            pause = min(pause * 2, policy.interval)
    finally:
        client.close()


def _is_marker(check: HealthCheck) -> bool:
    return check.url.endswith("/" + MARKER_URL) and (check.contains or "").startswith(
        "forge-release:")


def marker_check(url: str, release_id: str) -> HealthCheck:
    return HealthCheck(url=url.rstrip("/") + "/" + MARKER_URL, status=200,
                       contains=f"forge-release:{release_id}")
