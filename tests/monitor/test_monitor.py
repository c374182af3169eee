"""`forge-ci monitor` against real peers: an HTTP(S) server on loopback, a TLS server
whose certificates are made here (short-lived, expired), a file:// backup store with a
snapshot taken by the backup code at a time in the past, a target on a small tmpfs
that a test fills, a deploy lock held by a real flock. Each problem must come out
with its severity and exit code; notifications go out on changes of state only."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import hmac
import http.server
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from lab.webserver import serve

from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.repo import Repository
from forge_ci.backup.take import Source, take_snapshot
from forge_ci.cli import main
from forge_ci.config.backup import BackupConfig
from forge_ci.errors import ExitCode
from forge_ci.remote.local import LocalHost
from forge_ci.store import open_store
from tests.notify.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    Secrets,
    notify_secrets,
    receiver,
)
from tests.test_tls import NOW, Issuer, _cert, _pem

OK, WARNING, CRITICAL = ExitCode.OK, ExitCode.MONITOR_WARNING, ExitCode.MONITOR_CRITICAL


class _Page(http.server.BaseHTTPRequestHandler):
    status = 200
    timeout = 10  # a client that stalls frees its handler thread

    def do_GET(self) -> None:
        body = b"ok site\n"
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Monitored:
    """A local-target environment on its own small tmpfs, served over HTTP, watched by
    `forge-ci monitor` with a state file and a webhook receiver."""

    root: Path
    target: Path
    rec: Receiver
    secrets: Secrets
    env: dict[str, str]
    handler: type[_Page]
    url: str
    extra: str = ""
    sent: int = 0
    servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list)

    def configure(self, extra: str = "", url: str | None = None) -> None:
        self.url = url or self.url
        (self.root / "forge.yml").write_text(
            "version: 1\nproject: shop\nenvironments:\n  local:\n"
            f"    path: target\n    url: {self.url}\n    marker: false\n"
            "    monitor: {disk_min_free: 10%, backup_max_age: 26h, lock_max_age: 30m}\n"
            f"    notify:\n      - {{type: webhook, url: '{self.rec.url('/m')}', "
            "secret: '${HOOK_SECRET}'}\n" + extra)

    def monitor(self, *args: str) -> tuple[int, dict[str, Any]]:
        out = io_capture(lambda: main(["monitor", "local", "--json", "--state",
                                       str(self.root / "state.json"), *args,
                                       "--config", str(self.root / "forge.yml")], env=self.env))
        return out[0], json.loads(out[1])

    def new_events(self) -> list[dict[str, Any]]:
        """What the receiver got since the last call (signature checked)."""
        fresh = self.rec.requests[self.sent:]
        self.sent = len(self.rec.requests)
        out = []
        for req in fresh:
            stamp = req.headers["X-Forge-Timestamp"]
            mac = hmac.new(self.secrets.hook_secret.encode(), stamp.encode() + b"." + req.body,
                           hashlib.sha256).hexdigest()
            assert req.headers["X-Forge-Signature"] == "sha256=" + mac
            out.append(json.loads(req.body))
        return out


def io_capture(call: Callable[[], int]) -> tuple[int, str]:
    import contextlib as cl
    import io

    buf = io.StringIO()
    with cl.redirect_stdout(buf):
        rc = call()
    return rc, buf.getvalue()


def severities(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"].split(" ")[0]: c["severity"] for c in report["checks"]}


@pytest.fixture
def site(tmp_path: Path, receiver: Callable[..., Receiver],  # noqa: F811
         notify_secrets: Secrets) -> Iterator[Monitored]:  # noqa: F811
    target = tmp_path / "target"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)], check=True)
    handler = type("Page", (_Page,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve(server)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "HOOK_SECRET": notify_secrets.hook_secret, "FORGE_NOTIFY_ATTEMPTS": "1",
           "GITHUB_ACTOR": "octocat"}
    m = Monitored(tmp_path, target, receiver(), notify_secrets, env, handler,
                  f"http://127.0.0.1:{server.server_address[1]}", servers=[server])
    m.configure()
    yield m
    for s in m.servers:
        s.shutdown()
        s.server_close()
    subprocess.run(["umount", "-l", str(target)], check=False)


def test_healthy_down_and_recovered_notify_on_changes_only(site: Monitored) -> None:
    rc, report = site.monitor()
    assert rc == OK and report["severity"] == "ok"
    assert severities(report) == {"http": "ok", "disk": "ok", "lock": "ok"}
    assert site.new_events() == []  # a healthy first run tells nobody
    assert site.monitor()[0] == OK and site.new_events() == []

    site.handler.status = 503  # the site is down
    rc, report = site.monitor()
    assert rc == CRITICAL and severities(report)["http"] == "critical"
    (alert,) = site.new_events()
    assert alert["event"] == "monitor.alert" and alert["severity"] == "critical"
    assert alert["environment"] == "local" and "HTTP 503" in alert["summary"]
    assert alert["actor"] == "octocat"
    assert site.monitor()[0] == CRITICAL and site.new_events() == []  # no alert storm

    site.handler.status = 200
    rc, report = site.monitor()
    assert rc == OK
    (recovered,) = site.new_events()
    assert recovered["event"] == "monitor.recovered"
    assert f"http {site.url}" in recovered["summary"]
    assert site.monitor()[0] == OK and site.new_events() == []


def test_a_site_that_does_not_answer_is_critical(site: Monitored) -> None:
    site.servers[0].shutdown()
    site.servers[0].server_close()
    site.servers.clear()
    rc, report = site.monitor()
    assert rc == CRITICAL and "no answer" in report["checks"][0]["detail"]


def test_a_full_disk_is_critical_and_told_once(site: Monitored) -> None:
    with open(site.target / "fill", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * (4 * 1024 * 1024))
    rc, report = site.monitor()
    assert rc == CRITICAL and severities(report)["disk"] == "critical"
    (alert,) = site.new_events()
    assert "disk local" in alert["summary"] and "% free" in alert["summary"]
    assert site.monitor()[0] == CRITICAL and site.new_events() == []
    # Between once and twice the minimum: a warning, which is a change worth telling.
    (site.target / "fill").unlink()
    with open(site.target / "fill", "wb") as f:
        f.write(b"\0" * int(3.4 * 1024 * 1024))
    rc, report = site.monitor()
    assert rc == WARNING and severities(report)["disk"] == "warning"
    assert [e["severity"] for e in site.new_events()] == ["warning"]


def test_a_deploy_lock_held_too_long_is_a_warning(site: Monitored) -> None:
    meta = site.target / ".forge"
    meta.mkdir()
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (meta / "lock.json").write_text(json.dumps({"command": "deploy", "actor": "mona",
                                                "run": "41", "since": since}) + "\n")
    with open(meta / "lock", "a") as held:  # what flock(1) in a running deploy holds
        fcntl.flock(held, fcntl.LOCK_EX)
        rc, report = site.monitor()
    assert rc == WARNING
    (lock,) = [c for c in report["checks"] if c["name"].startswith("lock")]
    assert lock["severity"] == "warning" and "command deploy, actor mona, run 41" in lock["detail"]
    assert site.monitor()[0] == OK  # released: ok again
    assert [e["event"] for e in site.new_events()] == ["monitor.alert", "monitor.recovered"]


def _backup_at(site: Monitored, when: dt.datetime) -> None:
    (site.target / "web").mkdir(exist_ok=True)
    (site.target / "web" / "a.txt").write_text("content\n")
    identity = generate_identity()
    store = open_store((site.root / "store").as_uri())
    repo = Repository(store, "shop", "local", recipients=[identity.recipient])
    source = Source(LocalHost(), str(site.target), "shop", "local", ("local",))
    take_snapshot(repo, source, BackupConfig(store="file:store", paths=("web",)),
                  now=lambda: when)


def test_a_backup_older_than_allowed_is_critical(site: Monitored) -> None:
    site.configure("    backup: {store: 'file:store', paths: [web]}\n")
    rc, report = site.monitor()
    assert rc == CRITICAL and "no authenticated snapshot" in report["checks"][1]["detail"]
    _backup_at(site, dt.datetime.now(dt.UTC) - dt.timedelta(hours=30))
    rc, report = site.monitor()
    assert rc == CRITICAL
    (backup,) = [c for c in report["checks"] if c["name"] == "backup"]
    assert "30.0h old" in backup["detail"] and "more than 26.0h" in backup["detail"]
    _backup_at(site, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    rc, report = site.monitor()
    assert rc == OK and severities(report)["backup"] == "ok"
    events = site.new_events()
    assert [e["event"] for e in events] == ["monitor.alert", "monitor.recovered"]


def _https(site: Monitored, leaf: Issuer, chain: tuple[Issuer, ...]) -> str:
    cert, key = site.root / "leaf.pem", site.root / "leaf.key"
    cert.write_bytes(_pem(leaf, *chain))
    key.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(site.handler))
    # The handshake runs in the handler's thread, on first read: done in accept(), a
    # client that never finishes it would block serve_forever and with it shutdown().
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    serve(server)
    site.servers.append(server)
    return f"https://localhost:{server.server_address[1]}"


@pytest.mark.parametrize(("days", "code", "severity"), [
    (90, OK, "ok"), (5, WARNING, "warning"), (-2, CRITICAL, "critical")])
def test_certificates_short_lived_and_expired(site: Monitored, days: int, code: int,
                                              severity: str) -> None:
    root = _cert("forge monitor root", None, ca=True, end=NOW + dt.timedelta(days=3650))
    leaf = _cert("localhost", root, names=("localhost",),
                 start=NOW - dt.timedelta(days=30), end=NOW + dt.timedelta(days=days))
    (site.root / "ca.pem").write_bytes(_pem(root))
    site.env["SSL_CERT_FILE"] = str(site.root / "ca.pem")
    site.configure(url=_https(site, leaf, ()))
    rc, report = site.monitor()
    tls = [c for c in report["checks"] if c["name"].startswith("tls")]
    assert tls[0]["name"] == f"tls localhost:{site.url.rsplit(':', 1)[1]}"
    assert (rc, tls[0]["severity"]) == (code, severity), tls
    if days == 5:
        assert "valid for 4 more days" in tls[0]["detail"] or "valid for 5 more" \
            in tls[0]["detail"]
    if days < 0:
        assert "expired" in tls[0]["detail"]


def test_schedule_about_to_be_disabled_warns(site: Monitored) -> None:
    old = int(time.time()) - 55 * 86400
    rc, report = site.monitor("--last-activity", str(old))
    assert rc == WARNING
    (schedule,) = [c for c in report["checks"] if c["name"] == "schedule"]
    assert "no commit for 55 days" in schedule["detail"]
    assert site.monitor("--last-activity", dt.datetime.now(dt.UTC).isoformat())[0] == OK


def test_health_reports_the_certificates_days_left_and_warns_when_short(
        site: Monitored, capsys: pytest.CaptureFixture[str]) -> None:
    root = _cert("forge health root", None, ca=True, end=NOW + dt.timedelta(days=3650))
    leaf = _cert("localhost", root, names=("localhost",),
                 start=NOW - dt.timedelta(days=30), end=NOW + dt.timedelta(days=5))
    (site.root / "ca.pem").write_bytes(_pem(root))
    site.env["SSL_CERT_FILE"] = str(site.root / "ca.pem")
    url = _https(site, leaf, ())
    site.configure(url=url, extra=f"    health: [{{url: '{url}/'}}]\n")
    capsys.readouterr()
    assert main(["health", "local", "--json", "--config", str(site.root / "forge.yml")],
                env=site.env) == 0
    captured = capsys.readouterr()
    [cert] = json.loads(captured.out)["certificates"]
    assert cert["severity"] == "warning" and cert["days_left"] in (4, 5)
    assert "tls_min_days: 14" in captured.err and "more days" in captured.err


def test_one_refused_connection_is_tried_again_before_the_site_counts_as_down() -> None:
    from forge_ci.monitor.checks import check_http
    from forge_ci.tls import Severity

    handler = type("Page", (_Page,), {"status": 200})
    probe = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = probe.server_address[1]
    probe.server_close()  # the first attempt is refused
    servers: list[http.server.ThreadingHTTPServer] = []

    def come_up(_seconds: float) -> None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        serve(server)
        servers.append(server)

    try:
        check = check_http(f"http://127.0.0.1:{port}/", response_max=5.0, sleep=come_up)
        assert check.severity is Severity.OK and servers
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
