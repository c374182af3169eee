"""AWS Signature Version 4 for S3 requests: pure functions, no I/O.

A request is signed over its method, path, query, a chosen set of headers and the
payload's hash (``UNSIGNED-PAYLOAD`` for bodies whose Content-MD5 header is signed
instead: the digest still binds the bytes to the signature, without a second pass
over every part). S3 paths are URI-encoded once, every byte but ``A-Za-z0-9-_.~``
and the ``/`` separators; query names and values are encoded the same way, ``/``
included.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class Credentials:
    """One set of keys; ``token`` is the session token of temporary credentials."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def aws_domain(region: str) -> str:
    """The DNS suffix of AWS's endpoints in ``region``'s partition."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uri_encode_path(path: str) -> str:
    """An S3 object path as SigV4 wants it (and as it goes on the wire)."""
    return quote(path, safe="/")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(params.items())
    )


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """(the canonical request, the signed-headers list) for already-encoded
    ``path`` and ``query``; every header in ``headers`` is signed."""
    lowered = sorted((k.lower().strip(), " ".join(v.split())) for k, v in headers.items())
    signed = ";".join(k for k, _ in lowered)
    header_lines = "".join(f"{k}:{v}\n" for k, v in lowered)
    request = "\n".join([method, path, query, header_lines, signed, payload_hash])
    return request, signed


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, credential_scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{credential_scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def amz_date(now: datetime) -> str:
    """``now`` (UTC) as ``YYYYMMDDTHHMMSSZ``."""
    return now.strftime("%Y%m%dT%H%M%SZ")


def sign(
    creds: Credentials,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    payload_hash: str,
    *,
    region: str,
    now: datetime,
    service: str = "s3",
) -> None:
    """Add the date, payload hash, session token and Authorization to ``headers``.

    ``headers`` must already hold ``host`` and every header to be signed; ``path``
    and ``query`` are as sent (encoded with :func:`uri_encode_path` and
    :func:`canonical_query`).
    """
    stamp = amz_date(now)
    headers["x-amz-date"] = stamp
    headers["x-amz-content-sha256"] = payload_hash
    if creds.token:
        headers["x-amz-security-token"] = creds.token
    request, signed = canonical_request(method, path, query, headers, payload_hash)
    credential_scope = scope(stamp[:8], region, service)
    key = signing_key(creds.secret_access_key, stamp[:8], region, service)
    to_sign = string_to_sign(stamp, credential_scope, request)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key_id}/{credential_scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
