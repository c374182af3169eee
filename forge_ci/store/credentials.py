"""Where the S3 store's keys come from, in this order:

1. static keys given by the caller (``AWS_ACCESS_KEY_ID``/``SECRET``/``SESSION_TOKEN``);
2. a web identity: the token file the OIDC action wrote and the role to assume,
   exchanged at STS (AssumeRoleWithWebIdentity, an unsigned POST) for temporary keys,
   exchanged again five minutes before they expire;
3. anything else (profiles, instance roles, SSO): boto3's own credential chain,
   imported only then, so the common cases never load botocore.

Every provider is a callable returning the :class:`Credentials` to sign the next
request with; it is safe to call from several threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from forge_ci.store import _xml
from forge_ci.store.sigv4 import Credentials, aws_domain

Provider = Callable[[], Credentials]
REFRESH_BEFORE = 300.0  # seconds before expiry when temporary keys are renewed
STS_VERSION = "2011-06-15"


class NoCredentialsError(Exception):
    """No usable credentials; the message names what is missing, never a secret."""


class CredentialsRefusedError(Exception):
    """STS refused the exchange (``code`` is its error code); never holds a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


@dataclass(frozen=True)
class WebIdentity:
    """A role to assume with the token in ``token_file``, at ``sts_endpoint``
    (None: the region's STS)."""

    token_file: str
    role_arn: str
    session_name: str | None = None
    sts_endpoint: str | None = None


def static(creds: Credentials) -> Provider:
    return lambda: creds


def sts_url(endpoint: str | None, region: str) -> str:
    default = f"https://sts.{region}.{aws_domain(region)}"
    return (endpoint or default).rstrip("/") + "/"


def assume_role_with_web_identity(
    identity: WebIdentity, region: str, *, timeout: float = 10.0
) -> tuple[Credentials, float]:
    """Exchange the token for temporary keys: (keys, expiry as a POSIX time)."""
    import urllib.error
    import urllib.request

    try:
        token = Path(identity.token_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise NoCredentialsError(
            f"cannot read the web identity token file ({e.strerror})") from None
    form = urllib.parse.urlencode({
        "Action": "AssumeRoleWithWebIdentity",
        "Version": STS_VERSION,
        "RoleArn": identity.role_arn,
        "RoleSessionName": identity.session_name or f"forge-{int(time.time())}",
        "WebIdentityToken": token,
    }).encode()
    request = urllib.request.Request(  # noqa: S310 - an http(s) URL from the caller
        sts_url(identity.sts_endpoint, region), data=form, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                 "Accept": "application/xml"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as e:
        try:
            root = _xml.parse(e.read())
            code, message = _xml.find(root, "Code"), _xml.find(root, "Message")
        except _xml.ParseError:
            code, message = f"HTTP {e.code}", ""
        raise CredentialsRefusedError(code or f"HTTP {e.code}", message) from None
    root = _xml.parse(body)
    key, secret = _xml.find(root, "AccessKeyId"), _xml.find(root, "SecretAccessKey")
    session, expiration = _xml.find(root, "SessionToken"), _xml.find(root, "Expiration")
    if not (key and secret and session and expiration):
        raise CredentialsRefusedError("MalformedResponse", "STS answered without credentials")
    expires = datetime.fromisoformat(expiration).timestamp()
    return Credentials(key, secret, session), expires


class Refreshing:
    """Temporary keys from ``fetch`` (keys, expiry), fetched again shortly before
    they expire. One thread fetches; the others wait for it."""

    def __init__(self, fetch: Callable[[], tuple[Credentials, float]],
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch, self._clock = fetch, clock
        self._lock = threading.Lock()
        self._creds: Credentials | None = None
        self._expires = 0.0

    def __call__(self) -> Credentials:
        with self._lock:
            if self._creds is None or self._clock() > self._expires - REFRESH_BEFORE:
                self._creds, self._expires = self._fetch()
            return self._creds


def web_identity(identity: WebIdentity, region: str, *, timeout: float = 10.0) -> Provider:
    return Refreshing(lambda: assume_role_with_web_identity(identity, region, timeout=timeout))


def boto_chain() -> Provider:
    """boto3's default credential chain (profiles, instance roles, SSO...)."""
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise NoCredentialsError("no AWS credentials found")

    def frozen() -> Credentials:
        now = found.get_frozen_credentials()
        if not now.access_key or not now.secret_key:
            raise NoCredentialsError("the AWS credentials found are incomplete")
        return Credentials(now.access_key, now.secret_key, now.token or None)

    return frozen


def provider(
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    identity: WebIdentity | None,
    region: str,
) -> Provider:
    """The first source that applies (see the module's docstring)."""
    if access_key_id or secret_access_key:
        if not (access_key_id and secret_access_key):
            missing = "AWS_SECRET_ACCESS_KEY" if access_key_id else "AWS_ACCESS_KEY_ID"

            def partial() -> Credentials:
                raise NoCredentialsError(f"{missing} is not set")

            return partial
        return static(Credentials(access_key_id, secret_access_key, session_token or None))
    if identity is not None:
        return web_identity(identity, region)
    chain: list[Provider] = []
    lock = threading.Lock()

    def lazily() -> Credentials:  # botocore is imported at the first request, not before
        with lock:
            if not chain:
                chain.append(boto_chain())
        return chain[0]()

    return lazily
