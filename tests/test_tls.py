"""forge_ci.tls against real TLS servers on loopback presenting certificates made here.

Each server is a thread speaking TLS with the stdlib (the server side of a real
handshake); the certificates are made with `cryptography`: a private root and
intermediate, leaves with chosen names and validity. What a monitor user
checks: the verdict (ok, expired, wrong name, ...), days left, and the severity
against `tls_min_days`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from forge_ci import tls
from forge_ci.tls import Severity, TlsProblem

NAME = "shop.forge.test"
NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _cert(
    subject: str,
    issuer: Issuer | None,
    *,
    names: tuple[str, ...] = (),
    ca: bool = False,
    start: dt.datetime = NOW - dt.timedelta(days=1),
    end: dt.datetime = NOW + dt.timedelta(days=90),
) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False), critical=True)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    signer = issuer.key if issuer else key
    return Issuer(builder.sign(signer, hashes.SHA256()), key)


@pytest.fixture(scope="module")
def root() -> Issuer:
    return _cert("forge test root", None, ca=True, end=NOW + dt.timedelta(days=3650))


@pytest.fixture(scope="module")
def intermediate(root: Issuer) -> Issuer:
    return _cert("forge test intermediate", root, ca=True, end=NOW + dt.timedelta(days=1000))


@pytest.fixture
def root_file(root: Issuer, tmp_path: Path) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    return path


def _pem(*parts: Issuer) -> bytes:
    return b"".join(p.cert.public_bytes(serialization.Encoding.PEM) for p in parts)


def _serve(sock: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        # The client hangs up on a certificate it does not like.
        with conn, contextlib.suppress(OSError):
            handle(conn)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start a loopback server; TLS with `leaf` (+ `chain`), or a raw `handle`."""
    listeners: list[socket.socket] = []

    def start(leaf: Issuer | None = None, chain: tuple[Issuer, ...] = (),
              handle: Callable[[socket.socket], None] | None = None) -> int:
        if leaf is not None:
            cert, key = tmp_path / f"cert{len(listeners)}.pem", tmp_path / f"key{len(listeners)}"
            cert.write_bytes(_pem(leaf, *chain))
            key.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)

            def handle_tls(conn: socket.socket) -> None:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)

            handle = handle_tls
        assert handle is not None
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listeners.append(sock)
        threading.Thread(target=_serve, args=(sock, handle), daemon=True).start()
        return int(sock.getsockname()[1])

    yield start
    for sock in listeners:
        sock.close()


def _inspect(port: int, cafile: Path | None, now: dt.datetime | None = None) -> tls.TlsReport:
    return tls.inspect(NAME, port, address="127.0.0.1", cafile=cafile, timeout=5, now=now)


def test_valid_chain_through_an_intermediate(
    server: Callable[..., int], root_file: Path, intermediate: Issuer
) -> None:
    leaf = _cert(NAME, intermediate, names=(NAME, f"www.{NAME}"))
    report = _inspect(server(leaf, (intermediate,)), root_file)
    assert report.ok, report.summary()
    assert report.problem is None
    assert report.names == (NAME, f"www.{NAME}")
    assert report.issuer == "forge test intermediate"
    assert report.days_left in (89, 90)
    assert report.not_after == leaf.cert.not_valid_after_utc
    assert report.severity(min_days=14) is Severity.OK
    assert "valid for" in report.summary()


def test_few_days_left_is_a_warning(
    server: Callable[..., int], root_file: Path, root: Issuer
) -> None:
    leaf = _cert(NAME, root, names=(NAME,), end=NOW + dt.timedelta(days=5, hours=1))
    report = _inspect(server(leaf), root_file)
    assert report.ok
    assert report.days_left == 5
    assert report.severity(min_days=14) is Severity.WARNING
    assert report.severity(min_days=5) is Severity.OK


def test_expired_is_critical(server: Callable[..., int], root_file: Path, root: Issuer) -> None:
    leaf = _cert(NAME, root, names=(NAME,), start=NOW - dt.timedelta(days=100),
                 end=NOW - dt.timedelta(days=2))
    report = _inspect(server(leaf), root_file)
    assert report.problem is TlsProblem.EXPIRED
    assert report.days_left is not None and report.days_left < 0
    assert report.severity(min_days=14) is Severity.CRITICAL
    assert "expired" in report.summary()


def test_the_clock_is_passed_in(server: Callable[..., int], root_file: Path, root: Issuer) -> None:
    leaf = _cert(NAME, root, names=(NAME,))
    port = server(leaf)
    later = _inspect(port, root_file, now=NOW + dt.timedelta(days=200))
    assert later.problem is TlsProblem.EXPIRED
    earlier = _inspect(port, root_file, now=NOW - dt.timedelta(days=3))
    assert earlier.problem is TlsProblem.NOT_YET_VALID


def test_not_yet_valid(server: Callable[..., int], root_file: Path, root: Issuer) -> None:
    leaf = _cert(NAME, root, names=(NAME,), start=NOW + dt.timedelta(days=1))
    report = _inspect(server(leaf), root_file)
    assert report.problem is TlsProblem.NOT_YET_VALID
    assert report.severity(min_days=14) is Severity.CRITICAL


def test_wrong_name(server: Callable[..., int], root_file: Path, root: Issuer) -> None:
    leaf = _cert("other.forge.test", root, names=("other.forge.test",))
    report = _inspect(server(leaf), root_file)
    assert report.problem is TlsProblem.NAME_MISMATCH
    assert report.names == ("other.forge.test",)
    assert report.severity(min_days=14) is Severity.CRITICAL


def test_untrusted_chain(server: Callable[..., int], root_file: Path) -> None:
    stranger = _cert("someone else's root", None, ca=True)
    port = server(_cert(NAME, stranger, names=(NAME,)))
    assert _inspect(port, root_file).problem is TlsProblem.UNTRUSTED
    # The system trust store does not know a private root either.
    assert _inspect(port, None).problem is TlsProblem.UNTRUSTED


def test_self_signed(server: Callable[..., int], root_file: Path) -> None:
    report = _inspect(server(_cert(NAME, None, names=(NAME,))), root_file)
    assert report.problem is TlsProblem.SELF_SIGNED
    assert report.severity(min_days=14) is Severity.CRITICAL


def test_plain_http_port(server: Callable[..., int], root_file: Path) -> None:
    def http(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    report = _inspect(server(handle=http), root_file)
    assert report.problem is TlsProblem.NO_TLS
    assert report.names == () and report.days_left is None
    assert report.severity(min_days=14) is Severity.CRITICAL


def test_hang_up_mid_handshake(server: Callable[..., int], root_file: Path) -> None:
    report = _inspect(server(handle=lambda conn: conn.close()), root_file)
    assert report.problem is TlsProblem.HANDSHAKE_FAILED


def test_nothing_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    report = _inspect(port, None)
    assert report.problem is TlsProblem.UNREACHABLE
    assert f"127.0.0.1:{port}" in report.detail


def test_inspect_url(server: Callable[..., int], root_file: Path, root: Issuer) -> None:
    port = server(_cert(NAME, root, names=(NAME,)))
    report = tls.inspect_url(f"https://{NAME}:{port}/wp/", address="127.0.0.1", cafile=root_file)
    assert report.ok and report.port == port and report.host == NAME
    with pytest.raises(ValueError, match="not an https:// URL"):
        tls.inspect_url(f"http://{NAME}/")
