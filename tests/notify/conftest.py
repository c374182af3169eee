"""Real peers for the notifiers: an HTTP receiver (http.server in a thread) and an
SMTP server (aiosmtpd's Controller) with STARTTLS or implicit TLS and AUTH, both on
127.0.0.1, plus the secrets a user would configure, random per run and registered
with the suite's leak check."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lab import leaks
from lab.webserver import serve

from forge_ci.notify import RetryPolicy

# --- secrets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """What a user keeps in GitHub secrets: the chat webhook paths (the URL is the
    credential), the HMAC secret, the SMTP user and password."""

    slack_path: str
    discord_path: str
    teams_path: str
    hook_secret: str
    smtp_user: str
    smtp_password: str

    def __repr__(self) -> str:
        return "Secrets(...)"  # a failing test's report shows fixtures' reprs

    def all(self) -> list[str]:
        return [self.slack_path, self.discord_path, self.teams_path, self.hook_secret,
                self.smtp_user, self.smtp_password]


@pytest.fixture
def notify_secrets() -> Secrets:
    made = Secrets(
        slack_path="/services/T0FORGE/B0FORGE/" + secrets.token_hex(16),
        discord_path="/api/webhooks/1234/" + secrets.token_urlsafe(32),
        teams_path="/workflows/" + secrets.token_hex(20),
        hook_secret=secrets.token_hex(24),
        smtp_user="forge-" + secrets.token_hex(10),
        smtp_password=secrets.token_urlsafe(24),
    )
    for value in made.all():
        leaks.register(value.rsplit("/", 1)[-1])
    return made


def assert_no_secret(text: str, notify_secrets: Secrets) -> None:
    for value in notify_secrets.all():
        token = value.rsplit("/", 1)[-1]
        assert token not in text, "a secret leaked into: " + text[:200]


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(attempts=3, backoff=0, timeout=1.0)


# --- HTTP receiver ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every POST and answers ``status``
    (or, with ``hang``, nothing until the test ends)."""

    status: int = 200
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            if receiver.hang:
                receiver.release.wait(15)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the path is a secret; and the test output stays quiet

    return Handler


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[ThreadingHTTPServer, Receiver]] = []

    def make(status: int = 200, *, hang: bool = False) -> Receiver:
        rec = Receiver(status=status, hang=hang)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
        server.daemon_threads = True
        rec.port = server.server_address[1]
        serve(server)
        servers.append((server, rec))
        return rec

    yield make
    for server, rec in servers:
        rec.release.set()
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- TLS -------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # what the client trusts
    cert: Path  # the server's chain
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost it signed."""
    root = tmp_path_factory.mktemp("notify-tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("forge test CA")).issuer_name(
            _name("forge test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(root / "ca.pem", root / "server.pem", root / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


# --- SMTP server -----------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server saw: messages delivered and logins tried."""

    port: int = 0
    messages: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, bytes, bytes]] = field(  # mechanism, user, password
        default_factory=list, repr=False)
    tls_sessions: int = 0


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.box.messages.append(envelope)
        return "250 OK"


def _authenticator(box: Mailbox, user: str, password: str) -> Callable[..., AuthResult]:
    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
              data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        box.logins.append((mechanism, data.login, data.password))
        if session.ssl is not None:
            box.tls_sessions += 1
        ok = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    return check


@pytest.fixture
def smtp_server(tls_files: TlsFiles, notify_secrets: Secrets) -> Iterator[Callable[..., Mailbox]]:
    """``make(mode)``: ``starttls`` (STARTTLS required before MAIL and AUTH),
    ``implicit`` (TLS from the first byte), or ``plain`` (no STARTTLS offered, and
    AUTH allowed in clear, so a client that would send its password is caught).
    ``mechanisms`` limits AUTH to those listed."""
    controllers: list[Controller] = []

    def make(mode: str = "starttls", *, mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")
             ) -> Mailbox:
        box = Mailbox(port=free_port())
        kwargs: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": box.port,
            "authenticator": _authenticator(box, notify_secrets.smtp_user,
                                            notify_secrets.smtp_password),
            "auth_exclude_mechanism": [m for m in ("LOGIN", "PLAIN") if m not in mechanisms],
            "auth_required": mode == "starttls",
            # aiosmtpd counts only STARTTLS as TLS: with implicit TLS it would hide AUTH
            "auth_require_tls": mode == "starttls",
        }
        if mode == "starttls":
            kwargs |= {"tls_context": tls_files.server_context(), "require_starttls": True}
        elif mode == "implicit":
            kwargs |= {"ssl_context": tls_files.server_context()}
        controller = Controller(_Handler(box), **kwargs)
        controller.start()
        controllers.append(controller)
        return box

    yield make
    for controller in controllers:
        controller.stop()
