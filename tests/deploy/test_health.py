"""Health checks against real HTTP servers on loopback: late, resetting, lying ones.

A web server that comes up a little after the switch, or drops the first
connection, must pass within the time bound; the error reported is the real
one; behind a balancer a single failure after the release marker shows the new
release fails the check at once.
"""

from __future__ import annotations

import http.server
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from lab._proc import free_port
from lab.webserver import serve

from forge_ci.config.models import HealthCheck
from forge_ci.deploy import health

POLICY = health.HealthPolicy(timeout=8.0, interval=0.2, request_timeout=2.0)


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server does
    answer: Callable[[str], tuple[int, str]] = staticmethod(lambda path: (200, "ok"))

    def do_GET(self) -> None:
        status, body = type(self).answer(self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int, answer: Callable[[str], tuple[int, str]] | None = None,
           ) -> http.server.ThreadingHTTPServer:
    handler = type("H", (_Ok,), {"answer": staticmethod(answer)} if answer else {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    serve(server)
    return server


@pytest.fixture
def servers() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    started: list[http.server.ThreadingHTTPServer] = []
    yield started
    for s in started:
        s.shutdown()
        s.server_close()


def test_a_server_that_comes_up_late_passes_and_the_real_error_is_logged(
    servers: list[http.server.ThreadingHTTPServer],
) -> None:
    port = free_port()
    # Nothing listens for 1.6 s after the "switch": every connection is refused.
    timer = threading.Timer(1.6, lambda: servers.append(_serve(port)))
    timer.start()
    lines: list[str] = []
    outcome = health.run_checks([HealthCheck(url=f"http://127.0.0.1:{port}/", contains="ok")],
                                POLICY, lines.append, live=True)
    timer.join()
    assert outcome.ok, outcome.detail
    assert outcome.seconds >= 1.5
    assert any("Connection refused" in line for line in lines), lines
    assert not any("Request-sent" in line for line in lines), lines


def test_a_server_up_a_moment_after_the_switch_passes_without_a_whole_interval(
    servers: list[http.server.ThreadingHTTPServer],
) -> None:
    # Retries start 50 ms apart and grow to the interval: a site that answers 0.3 s
    # after the switch is seen healthy well before the one-second interval.
    port = free_port()
    timer = threading.Timer(0.3, lambda: servers.append(_serve(port)))
    timer.start()
    policy = health.HealthPolicy(timeout=8.0, interval=1.0, request_timeout=2.0)
    outcome = health.run_checks([HealthCheck(url=f"http://127.0.0.1:{port}/", contains="ok")],
                                policy, lambda _: None, live=True)
    timer.join()
    assert outcome.ok, outcome.detail
    assert 0.3 <= outcome.seconds < 1.0


def test_a_server_that_never_comes_up_reports_the_refusal_not_request_sent() -> None:
    port = free_port()
    outcome = health.run_checks([HealthCheck(url=f"http://127.0.0.1:{port}/")],
                                health.HealthPolicy(timeout=1.0, interval=0.2), lambda _: None)
    assert not outcome.ok
    assert "Connection refused" in outcome.detail
    assert "Request-sent" not in outcome.detail


def test_a_server_that_resets_the_first_connection_then_serves_passes() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve() -> None:
        first, _ = listener.accept()
        first.recv(4096)
        # SO_LINGER 0: close with a TCP reset, as a web server killed mid-request does.
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    lines: list[str] = []
    try:
        outcome = health.run_checks([HealthCheck(url=f"http://127.0.0.1:{port}/",
                                                 contains="ok")], POLICY, lines.append)
    finally:
        listener.close()
    assert outcome.ok, outcome.detail
    assert len(lines) == 1 and "reset" in lines[0].lower(), lines
    assert "Request-sent" not in lines[0]


def _balancer_like(bad_every: int) -> Callable[[str], tuple[int, str]]:
    """Answers as three backends behind round robin would, one of them broken:
    the marker answers everywhere, the page fails on every ``bad_every``-th request."""
    count = [0]

    def answer(path: str) -> tuple[int, str]:
        if path.endswith(health.MARKER_URL):
            return 200, "forge-release:r2\n"
        count[0] += 1
        return (500, "error") if count[0] % bad_every == 0 else (200, "ok")

    return answer


def test_one_failure_behind_a_balancer_after_the_marker_fails_at_once(
    servers: list[http.server.ThreadingHTTPServer],
) -> None:
    port = free_port()
    servers.append(_serve(port, _balancer_like(bad_every=3)))
    url = f"http://127.0.0.1:{port}"
    checks = [health.marker_check(url, "r2"), HealthCheck(url=url + "/", contains="ok")]
    lines: list[str] = []
    started = time.monotonic()
    outcome = health.run_checks(checks, POLICY, lines.append, live=True, rounds=6,
                                where=url)
    assert not outcome.ok
    assert "HTTP 500" in outcome.detail and url in outcome.detail
    assert time.monotonic() - started < 1.0  # no waiting out the time bound
    assert lines == [f"  {url}: attempt 3 failed: {url}/: HTTP 500, expected 200"]

    # One round is all a single host needs, and two requests never meet the third.
    assert health.run_checks(checks, POLICY, lambda _: None, live=True, rounds=1).ok


def test_passing_rounds_must_follow_each_other(
    servers: list[http.server.ThreadingHTTPServer],
) -> None:
    # Not live (no marker): failures are retried, but they reset the count.
    port = free_port()
    servers.append(_serve(port, _balancer_like(bad_every=4)))
    check = HealthCheck(url=f"http://127.0.0.1:{port}/")
    lines: list[str] = []
    short = health.HealthPolicy(timeout=1.0, interval=0.2)
    outcome = health.run_checks([check], short, lines.append, rounds=4)
    assert not outcome.ok  # never four good answers in a row
    assert lines and all("HTTP 500" in line for line in lines)
    assert health.run_checks([check], POLICY, lambda _: None, rounds=3).ok


def test_a_check_by_host_name_passes_and_an_unknown_name_says_so(
    servers: list[http.server.ThreadingHTTPServer],
) -> None:
    # Names are resolved as the SSH connections resolve them (ASCII names as bytes):
    # a name still reaches its server, and a name that does not resolve is reported.
    port = free_port()
    servers.append(_serve(port, lambda path: (200, f"served {path}")))
    outcome = health.run_checks([HealthCheck(url=f"http://localhost:{port}/x?y=1",
                                             contains="served /x?y=1")],
                                POLICY, lambda _: None)
    assert outcome.ok, outcome.detail
    outcome = health.run_checks([HealthCheck(url="http://no-such-host.invalid/")],
                                health.HealthPolicy(timeout=0.2, interval=0.1), lambda _: None)
    assert not outcome.ok
    assert "http://no-such-host.invalid/: " in outcome.detail, outcome.detail
