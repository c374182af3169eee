"""A real ACME CA on loopback: Debian's `pebble`, with `pebble-challtestsrv` as its DNS.

Pebble is Let's Encrypt's test CA (RFC 8555, the same protocol as production).
Its validation authority resolves names through challtestsrv's DNS, which
answers nothing until a test points a name with `Pebble.point(name)`: that is
"the DNS record is set up". A name never pointed is the user's situation before
they change DNS, and HTTP-01 validation for it fails like it would for real.

Pebble's VA fetches `http://<name>:<http_port>/.well-known/acme-challenge/<token>`
with `http_port` fixed at start, so the lab nginx must be running (its port
known) before pebble starts.

Pebble serves its API over HTTPS with a certificate made here (`ca_cert` is
what an ACME client must trust for the API); `root_pem()` fetches the root that
signs issued certificates, from pebble's management endpoint (a new one each
start): the CA file to verify a served certificate against.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ._proc import (
    free_port,
    lab_root,
    on_free_port,
    port_open,
    require_binary,
    spawn,
    terminate,
    wait_or_stop,
)

_START_TIMEOUT = 20.0


@dataclass
class Pebble:
    directory: str  # the ACME directory URL to hand a client
    ca_cert: Path  # trust this for the ACME API's own HTTPS
    http_port: int  # where pebble's VA fetches HTTP-01 challenges
    workdir: Path
    management: str
    dns_management: str
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def point(self, name: str, address: str = "127.0.0.1") -> None:
        """Make `name` resolve to `address` for pebble's VA (an A record)."""
        self._dns("add-a", {"host": name, "addresses": [address]})

    def unpoint(self, name: str) -> None:
        self._dns("clear-a", {"host": name})

    def root_pem(self) -> bytes:
        """The root that signs the certificates this pebble issues."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context,
                                    timeout=10) as reply:
            return bytes(reply.read())

    def write_root(self, path: Path) -> Path:
        path.write_bytes(self.root_pem())
        return path

    def _dns(self, action: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(f"{self.dns_management}/{action}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()

    def stop(self) -> None:
        for proc in reversed(self._procs):
            terminate(proc)
        self._procs.clear()


@contextmanager
def running_pebble(http_port: int) -> Iterator[Pebble]:
    """Pebble and its DNS on free loopback ports; HTTP-01 checked on `http_port`."""
    workdir = lab_root()
    cert = _api_certificate(workdir)
    dns = on_free_port(lambda port: _start_dns(workdir, port))
    try:
        pebble = on_free_port(lambda port: _start_pebble(workdir, cert, http_port, port, dns))
    except BaseException:
        terminate(dns[0])
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    pebble._procs.insert(0, dns[0])
    try:
        yield pebble
    finally:
        pebble.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _start_dns(workdir: Path, dns_port: int) -> tuple[subprocess.Popen[bytes], int, str]:
    binary = require_binary("pebble-challtestsrv", "package pebble")
    mgmt_port = free_port()
    log = workdir / "challtestsrv.log"
    # No default answer: a name resolves only once a test points it.
    argv = [binary, "-dns01", f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{mgmt_port}",
            "-defaultIPv4", "", "-defaultIPv6", "", "-http01", "", "-https01", "",
            "-tlsalpn01", ""]
    proc = spawn(argv, log)
    wait_or_stop(lambda: port_open(mgmt_port), stop=lambda: terminate(proc),
                 what="pebble-challtestsrv", timeout=_START_TIMEOUT, log=log, proc=proc)
    return proc, dns_port, f"http://127.0.0.1:{mgmt_port}"


def _start_pebble(
    workdir: Path, cert: tuple[Path, Path], http_port: int, port: int,
    dns: tuple[subprocess.Popen[bytes], int, str],
) -> Pebble:
    binary = require_binary("pebble", "package pebble")
    mgmt_port = free_port()
    config = workdir / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert[0]),
        "privateKey": str(cert[1]),
        "httpPort": http_port,
        "tlsPort": http_port,  # TLS-ALPN-01 is not used; pebble wants a number
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))
    log = workdir / "pebble.log"
    # Every order is validated afresh (no reused authorizations), as a renewal
    # months later would be.
    env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
           "PEBBLE_AUTHZREUSE": "0"}
    argv = [binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns[1]}"]
    proc = spawn(argv, log, env=env, cwd=workdir)
    wait_or_stop(lambda: port_open(port) and port_open(mgmt_port), stop=lambda: terminate(proc),
                 what="pebble", timeout=_START_TIMEOUT, log=log, proc=proc)
    return Pebble(directory=f"https://127.0.0.1:{port}/dir", ca_cert=cert[0],
                  http_port=http_port, workdir=workdir,
                  management=f"https://127.0.0.1:{mgmt_port}", dns_management=dns[2],
                  _procs=[proc])


def _api_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (pebble's API)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble lab API")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "api.pem", workdir / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path
