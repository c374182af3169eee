"""The certificate a site actually presents: chain, name, days left.

Health checks and ``forge-ci monitor`` ask one question of an HTTPS endpoint:
would a browser accept what this server sends right now, and for how long?
:func:`inspect` answers it with a :class:`TlsReport`; it never raises for what
the server does (refused, plain HTTP, bad certificate): ssl and socket errors
are translated here, at the seam, into a :class:`TlsProblem`.

How it looks, two handshakes:

1. without verification, to read the leaf whatever is wrong with it (subject
   names, issuer, validity), or learn the port speaks no TLS at all;
2. with verification against the system trust store (or ``cafile``) and the
   host name, to learn whether the chain and the name hold.

Dates are judged first (an expired certificate is reported as expired even
when its chain is also broken: renewing it is what to do), then OpenSSL's
verdict. ``now`` is passed in so tests and callers decide the clock.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

DEFAULT_TIMEOUT = 10.0


class TlsProblem(StrEnum):
    """Why a certificate is not acceptable. ``None`` in a report means none."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    NAME_MISMATCH = "name mismatch"
    UNTRUSTED = "untrusted chain"
    SELF_SIGNED = "self-signed"
    HANDSHAKE_FAILED = "handshake failed"
    NO_TLS = "no TLS"
    UNREACHABLE = "unreachable"


class Severity(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class TlsReport:
    """What ``host:port`` presented. Certificate fields are empty when none was seen."""

    host: str
    port: int
    problem: TlsProblem | None
    detail: str = ""
    days_left: int | None = None
    not_after: dt.datetime | None = None
    issuer: str = ""
    names: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def severity(self, min_days: int) -> Severity:
        """Critical when invalid, warning when fewer than ``min_days`` days are left."""
        if self.problem is not None or self.days_left is None or self.days_left < 0:
            return Severity.CRITICAL
        return Severity.WARNING if self.days_left < min_days else Severity.OK

    def summary(self) -> str:
        where = f"{self.host}:{self.port}"
        if self.problem is None:
            return f"{where}: valid for {self.days_left} more days (issuer {self.issuer})"
        return f"{where}: {self.problem.value}" + (f": {self.detail}" if self.detail else "")


def inspect_url(
    url: str,
    *,
    address: str | None = None,
    cafile: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    now: dt.datetime | None = None,
) -> TlsReport:
    """:func:`inspect` for an ``https://`` URL (port 443 unless the URL names one)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https:// URL with a host name")
    return inspect(parts.hostname, parts.port or 443, address=address, cafile=cafile,
                   timeout=timeout, now=now)


def inspect(
    host: str,
    port: int = 443,
    *,
    address: str | None = None,
    cafile: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    now: dt.datetime | None = None,
) -> TlsReport:
    """Connect to ``address or host`` on ``port`` with SNI ``host`` and judge the certificate.

    ``address`` aims the name at another address (a test's 127.0.0.1, a server
    before DNS points at it). ``cafile`` replaces the system trust store.
    """
    when = now or dt.datetime.now(dt.UTC)
    target = (address or host, port)
    try:
        der = _fetch_leaf(target, host, timeout)
    except _Failure as failure:
        return TlsReport(host, port, failure.problem, failure.detail)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return TlsReport(host, port, TlsProblem.HANDSHAKE_FAILED, f"unreadable certificate: {exc}")
    seen = _describe(host, port, cert, when)
    if when < cert.not_valid_before_utc:
        return _with(seen, TlsProblem.NOT_YET_VALID,
                     f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if when > cert.not_valid_after_utc:
        return _with(seen, TlsProblem.EXPIRED, f"expired {cert.not_valid_after_utc:%Y-%m-%d} UTC")
    try:
        _verify(target, host, cafile, timeout)
    except _Failure as failure:
        return _with(seen, failure.problem, failure.detail)
    return seen


class _Failure(Exception):
    def __init__(self, problem: TlsProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def _fetch_leaf(target: tuple[str, int], host: str, timeout: float) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _handshake(context, target, host, timeout) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise _Failure(TlsProblem.HANDSHAKE_FAILED, "the server sent no certificate")
    return der


def _verify(target: tuple[str, int], host: str, cafile: Path | None, timeout: float) -> None:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with _handshake(context, target, host, timeout):
        pass


# OpenSSL's X509_V_ERR_* codes this module tells apart.
_VERIFY_CODES = {
    9: TlsProblem.NOT_YET_VALID,
    10: TlsProblem.EXPIRED,
    18: TlsProblem.SELF_SIGNED,  # the leaf signed itself
    19: TlsProblem.UNTRUSTED,  # a self-signed root nobody here trusts
    62: TlsProblem.NAME_MISMATCH,
}
# What OpenSSL says when the other side answered with something that is not TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE",
            "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")


def _handshake(
    context: ssl.SSLContext, target: tuple[str, int], host: str, timeout: float
) -> ssl.SSLSocket:
    try:
        raw = socket.create_connection(target, timeout=timeout)
    except OSError as exc:
        raise _Failure(TlsProblem.UNREACHABLE, f"cannot connect to {target[0]}:{target[1]}: "
                       f"{exc.strerror or exc}") from None
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        problem = _VERIFY_CODES.get(exc.verify_code, TlsProblem.UNTRUSTED)
        raise _Failure(problem, exc.verify_message or str(exc)) from None
    except ssl.SSLError as exc:
        raw.close()
        reason = exc.reason or ""
        if reason in _NOT_TLS:
            raise _Failure(TlsProblem.NO_TLS, "the port answered, but not with TLS") from None
        raise _Failure(TlsProblem.HANDSHAKE_FAILED, reason or str(exc)) from None
    except OSError as exc:  # reset, EOF or timeout mid-handshake
        raw.close()
        raise _Failure(TlsProblem.HANDSHAKE_FAILED, str(exc) or type(exc).__name__) from None


def _describe(host: str, port: int, cert: x509.Certificate, now: dt.datetime) -> TlsReport:
    left = cert.not_valid_after_utc - now
    return TlsReport(host, port, None, days_left=left.days, not_after=cert.not_valid_after_utc,
                     issuer=_common_name(cert.issuer) or cert.issuer.rfc4514_string(),
                     names=_names(cert))


def _with(report: TlsReport, problem: TlsProblem, detail: str) -> TlsReport:
    return TlsReport(report.host, report.port, problem, detail, report.days_left,
                     report.not_after, report.issuer, report.names)


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = _common_name(cert.subject)
        return (common,) if common else ()
    return tuple(san.value.get_values_for_type(x509.DNSName))
