"""forge-https (forge_ci/provision/https.sh) against a real ACME CA.

The lab: nginx serving a static page as a plain process through the server
blocks provisioning writes (:func:`forge_ci.provision.stack.nginx_site`: the
live block with forge-https's include, the loopback preview without), only
their ports and directories moved into the lab, and
Debian's pebble as the CA whose validation authority resolves names through a
lab DNS. The script runs as on a server, its /etc paths pointed into the lab
directory. What a user checks: the site answers over HTTPS with a certificate
from the CA, HTTP redirects, a renewal replaces the certificate, and a name
whose DNS does not point here leaves the site on HTTP with a message saying what
to fix, until a later run completes it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from lab._proc import (
    descendants,
    free_port,
    lab_root,
    port_open,
    require_binary,
    require_root,
    spawn,
    terminate,
    wait_or_stop,
)
from lab.pebble import Pebble, running_pebble
from lab.policy import lab_required

from forge_ci import tls
from forge_ci.provision import stack
from forge_ci.provision.site import Site

SCRIPT = Path(__file__).resolve().parents[2] / "forge_ci" / "provision" / "https.sh"
PAGE = "hello from the forge https lab"


@dataclass
class HttpsLab:
    dir: Path
    http_port: int
    https_port: int
    preview_port: int
    pebble: Pebble
    root_ca: Path
    nginx_cmd: str
    nginx_pid: int

    def settled(self, check: Callable[[], bool]) -> bool:
        """True once `check` holds and nginx's old workers are gone.

        A reload is asynchronous: for a moment old workers (old config) and new
        ones take turns answering, so one good answer is not yet the state.
        """
        deadline = time.monotonic() + 15
        while not (check() and len(descendants(self.nginx_pid)) == 1):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def env(self, names: str, **extra: str) -> dict[str, str]:
        """The settings a provisioned server passes, its paths inside the lab."""
        env = {
            "PATH": os.environ["PATH"],
            "FORGE_HTTPS_DOMAINS": names,
            "FORGE_HTTPS_EMAIL": "ops@example.com",
            "FORGE_HTTPS_ACME": self.pebble.directory,
            "FORGE_HTTPS_HSTS": "true",
            "FORGE_HTTPS_CA_FILE": str(self.pebble.ca_cert),
            "FORGE_HTTPS_NGINX": self.nginx_cmd,
            "FORGE_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "FORGE_HTTPS_PORT": str(self.https_port),
            "FORGE_HTTPS_HTTP_PORT": str(self.http_port),
            "FORGE_HTTPS_SCHEDULER": "cron",
        }
        env["FORGE_HTTPS_ROOT"] = str(self.dir / "server")
        env.update(extra)
        return env

    def path(self, server_path: str) -> Path:
        """Where the script's `server_path` (/etc/..., /var/...) is in this lab."""
        return self.dir / "server" / server_path.lstrip("/")

    def run(self, env: dict[str, str], script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    def check(self, name: str) -> tls.TlsReport:
        return tls.inspect(name, self.https_port, address="127.0.0.1", cafile=self.root_ca)


def _site(workdir: Path) -> Site:
    """A provisioned site whose release tree is in the lab: current/web holds the page."""
    for link in ("current", "next"):
        web = workdir / "srv" / link / "web"
        web.mkdir(parents=True)
        (web / "index.html").write_text(f"{PAGE} ({link})")
    return Site(project="shop", environment="production", server_name="shop-production",
                deploy_user="deploy", path=str(workdir / "srv"), php_version="8.2",
                database="shop_production", swap_mb=0, ssh_port=22, hostnames=(),
                https=True)


def _nginx_conf(workdir: Path, http_port: int, preview_port: int) -> str:
    # The blocks provisioning writes; the lab moves their listen addresses (a free port
    # on 127.0.0.1) and the include's directory (the script's FORGE_HTTPS_ROOT).
    blocks = stack.nginx_site(
        _site(workdir), live_listen=(f"127.0.0.1:{http_port} default_server",),
        preview_listen=f"127.0.0.1:{preview_port}",
        https_dir=f"{workdir}/server{stack.HTTPS_DIR}")
    (workdir / "site.conf").write_text(blocks)
    shutil.copy("/etc/nginx/fastcgi_params", workdir / "fastcgi_params")
    return f"""\
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} notice;
user www-data;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log {workdir / "access.log"};
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    include {workdir / "site.conf"};
}}
"""


@pytest.fixture
def https_lab() -> Iterator[HttpsLab]:
    with lab_required():
        require_root()
        for binary in ("nginx", "lego", "pebble", "pebble-challtestsrv"):
            require_binary(binary, "Debian packages nginx, lego and pebble")
    workdir = lab_root()
    (workdir / "tmp").mkdir()
    http_port, https_port, preview_port = free_port(), free_port(), free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(_nginx_conf(workdir, http_port, preview_port))
    nginx_cmd = f"nginx -p {workdir} -c {conf} -e {workdir / 'error.log'}"
    proc = spawn([*nginx_cmd.split(), "-g", "daemon off;"], workdir / "stderr.log")
    wait_or_stop(lambda: port_open(http_port), lambda: terminate(proc), what="lab nginx",
                 timeout=20, log=[workdir / "stderr.log", workdir / "error.log"], proc=proc)
    try:
        with running_pebble(http_port) as pebble:
            root = pebble.write_root(workdir / "pebble-root.pem")
            yield HttpsLab(workdir, http_port, https_port, preview_port, pebble, root,
                           nginx_cmd, proc.pid)
    finally:
        terminate(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _site_name() -> str:
    return f"shop-{secrets.token_hex(4)}.forge.test"


def _http_get(port: int, host: str, path: str = "/", *, tls_ca: Path | None = None) -> str:
    """The raw response to GET `path` from 127.0.0.1:`port` for `host` (SNI too over TLS)."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_ca is not None:
        sock = ssl.create_default_context(cafile=str(tls_ca)).wrap_socket(
            sock, server_hostname=host)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _tls_versions(lab: HttpsLab, name: str) -> set[str]:
    """The protocol versions the site agrees to, of TLS 1.2 and 1.3."""
    agreed = set()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(lab.root_ca))
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", lab.https_port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=name) as sock:
            agreed.add(str(sock.version()))
    return agreed


def _served_serial(lab: HttpsLab, name: str) -> int:
    context = ssl.create_default_context(cafile=str(lab.root_ca))
    with socket.create_connection(("127.0.0.1", lab.https_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.lab
def test_issues_serves_redirects_and_renews(https_lab: HttpsLab) -> None:
    lab, name = https_lab, _site_name()
    www = f"www.{name}"
    lab.pebble.point(name)
    lab.pebble.point(www)

    first = lab.run(lab.env(f"{name},{www}"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"HTTPS is on for {name} {www}" in first.stdout

    assert lab.settled(lambda: _http_get(lab.http_port, name).startswith("HTTP/1.1 301"))
    report = lab.check(name)
    assert report.ok, report.summary()
    assert set(report.names) == {name, www}
    assert lab.check(www).ok
    assert "Pebble" in report.issuer
    assert report.severity(min_days=14) is tls.Severity.OK

    page = _http_get(lab.https_port, name, tls_ca=lab.root_ca)
    assert page.startswith("HTTP/1.1 200") and PAGE in page
    assert "Strict-Transport-Security: max-age=63072000" in page
    redirect = _http_get(lab.http_port, name, "/shop/?p=1")
    assert redirect.startswith("HTTP/1.1 301")
    assert f"Location: https://{name}:{lab.https_port}/shop/?p=1" in redirect
    assert _tls_versions(lab, name) == {"TLSv1.2", "TLSv1.3"}
    # The CA's challenge path stays on HTTP (a later renewal needs it).
    challenge = _http_get(lab.http_port, name, "/.well-known/acme-challenge/none")
    assert challenge.startswith("HTTP/1.1 404")
    # The preview route stays plain HTTP on the loopback: no redirect, no certificate.
    preview = _http_get(lab.preview_port, name)
    assert preview.startswith("HTTP/1.1 200") and f"{PAGE} (next)" in preview
    assert "Strict-Transport-Security" not in preview

    # A run with nothing to do leaves the certificate alone.
    serial = _served_serial(lab, name)
    again = lab.run(lab.env(f"{name},{www}"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "renewed" not in again.stdout
    assert lab.settled(lambda: True)
    assert _served_serial(lab, name) == serial

    # The timer's run: only the saved settings, renewal forced by the day limit.
    cron = lab.path("/etc/cron.d/forge-https").read_text()
    timer_run = f"FORGE_HTTPS_ROOT={lab.dir / 'server'} {lab.path('/usr/local/sbin/forge-https')}"
    assert f"root {timer_run} " in cron
    timer_env = {"PATH": "/usr/bin:/bin", "FORGE_HTTPS_RENEW_DAYS": "100000",
                 "FORGE_HTTPS_ROOT": str(lab.dir / "server")}
    renewed = lab.run(timer_env, script=lab.path("/usr/local/sbin/forge-https"))
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert f"renewed the certificate for {name}" in renewed.stdout
    assert lab.settled(lambda: _served_serial(lab, name) != serial)
    assert lab.check(name).ok

    assert (lab.path("/etc/forge-https.env").stat().st_mode & 0o777) == 0o600
    assert "RENEW_DAYS" not in lab.path("/etc/forge-https.env").read_text()
    assert lab.path("/var/lib/forge-https/status").read_text().startswith("ok ")


@pytest.mark.lab
def test_dns_not_pointing_here_is_pending_until_fixed(https_lab: HttpsLab) -> None:
    lab, name = https_lab, _site_name()
    env = lab.env(name, FORGE_HTTPS_SCHEDULER="systemd", FORGE_HTTPS_HSTS="false")

    pending = lab.run(env)
    assert pending.returncode == 3, pending.stdout + pending.stderr
    assert f"PENDING: no certificate for {name} yet" in pending.stdout
    assert f"Point the DNS A/AAAA records of {name} at this server" in pending.stdout
    page = _http_get(lab.http_port, name)
    assert page.startswith("HTTP/1.1 200") and PAGE in page
    assert lab.check(name).problem is tls.TlsProblem.UNREACHABLE
    # The timer that will finish the job is in place already (systemd units here).
    assert lab.path("/var/lib/forge-https/status").read_text().startswith("pending ")
    units = lab.path("/etc/systemd/system")
    assert "SuccessExitStatus=3" in (units / "forge-https.service").read_text()
    assert "OnCalendar=" in (units / "forge-https.timer").read_text()
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(units / "forge-https.timer"),
             str(units / "forge-https.service")], capture_output=True, text=True, check=False)
        assert str(units) not in verify.stdout + verify.stderr, verify.stderr

    lab.pebble.point(name)
    fixed = lab.run(env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert lab.settled(lambda: _http_get(lab.http_port, name).startswith("HTTP/1.1 301"))
    assert lab.check(name).ok
    page = _http_get(lab.https_port, name, tls_ca=lab.root_ca)
    assert PAGE in page and "Strict-Transport-Security" not in page

    # DNS moves away later: the renewal fails loudly, the current certificate stays.
    lab.pebble.unpoint(name)
    renew = {**env, "FORGE_HTTPS_RENEW_DAYS": "100000"}
    failed, serial = _renewal_validated_afresh(lab, name, renew)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"renewing the certificate for {name} failed; the current one is still served" \
        in failed.stderr
    assert lab.path("/var/lib/forge-https/status").read_text().startswith("failed ")
    assert _served_serial(lab, name) == serial


def _renewal_validated_afresh(
    lab: HttpsLab, name: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """A renewal the CA validates again, and the serial served before it.

    Pebble reuses the account's still-valid authorization about 1 time in 100
    even with PEBBLE_AUTHZREUSE=0 (it reuses unless `rand.Intn(100) > percent`),
    and then validates nothing: lego logs "authorization already valid". Only
    such a run is tried again; a renewal months later is always validated.
    """
    log = lab.path("/var/lib/forge-https/lego/last.log")
    for _ in range(5):
        serial = _served_serial(lab, name)
        result = lab.run(env)
        if result.returncode != 0 or "authorization already valid" not in log.read_text():
            return result, serial
        assert lab.settled(lambda before=serial: _served_serial(lab, name) != before)
    raise AssertionError("pebble reused the authorization 5 times in a row")


@pytest.mark.lab
def test_acme_off_serves_http_only(https_lab: HttpsLab) -> None:
    lab, name = https_lab, _site_name()
    result = lab.run(lab.env(name, FORGE_HTTPS_ACME="off"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ACME is off" in result.stdout
    assert _http_get(lab.http_port, name).startswith("HTTP/1.1 200")
    assert not port_open(lab.https_port)


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("FORGE_HTTPS_ACME", "lets-encrypt", "use letsencrypt, letsencrypt-staging, off or"),
    ("FORGE_HTTPS_HSTS", "yes", "FORGE_HTTPS_HSTS=yes: use true or false"),
    ("FORGE_HTTPS_DOMAINS", "Shop Example", "'Shop' is not a host name"),
    ("FORGE_HTTPS_DOMAINS", "", "FORGE_HTTPS_DOMAINS is empty"),
])
def test_bad_settings_exit_2_and_touch_nothing(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    env = {"PATH": os.environ["PATH"], "FORGE_HTTPS_DOMAINS": "shop.example.com",
           "FORGE_HTTPS_ROOT": str(tmp_path), setting: value}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert says in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.lab
def test_a_server_block_without_the_include_is_named(https_lab: HttpsLab) -> None:
    lab, name = https_lab, _site_name()
    lab.pebble.point(name)
    elsewhere = free_port()  # nothing there serves the webroot
    result = lab.run(lab.env(name, FORGE_HTTPS_HTTP_PORT=str(elsewhere)))
    assert result.returncode == 1
    assert f"nginx on port {elsewhere} does not serve" in result.stderr
    assert "needs include" in result.stderr and "forge-https/*.conf;" in result.stderr
