"""forge's own S3 client: SigV4 against AWS's published examples and botocore's signer,
odd key names through moto, credentials (session tokens, web identity through STS),
error answers and retries against small fake endpoints on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from lab.webserver import serve

from forge_ci.store import StoreAccessError, StoreError
from forge_ci.store.credentials import (
    CredentialsRefusedError,
    Refreshing,
    WebIdentity,
    assume_role_with_web_identity,
)
from forge_ci.store.s3 import DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Store
from forge_ci.store.s3client import S3Client, S3ResponseError
from forge_ci.store.sigv4 import EMPTY_SHA256, Credentials, sign, signing_key

# AWS's documentation examples (fictitious keys published by AWS).
EXAMPLE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


# --- SigV4 ---------------------------------------------------------------------------


def test_signing_key_matches_the_aws_example() -> None:
    """"Deriving the signing key" example of the AWS General Reference."""
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_get_object_signature_matches_the_aws_example() -> None:
    """S3's "GET Object" header-authentication example: bytes 0-9 of test.txt."""
    headers = {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"}
    sign(Credentials(EXAMPLE_KEY_ID, EXAMPLE_SECRET), "GET", "/test.txt", "", headers,
         EMPTY_SHA256, region="us-east-1", now=datetime(2013, 5, 24, tzinfo=UTC))
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def botocore_signature(method: str, url: str, headers: dict[str, str], secret: str,
                       region: str = "us-east-1") -> str:
    """What botocore's own S3 signer computes for the request as received."""
    request = AWSRequest(method=method, url=url, headers=headers)
    request.context["timestamp"] = headers["x-amz-date"]
    auth = S3SigV4Auth(BotoCredentials("id", secret, headers.get("x-amz-security-token")),
                       "s3", region)
    return str(auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                              request))


# --- a fake S3 that checks signatures as AWS does ---------------------------------------


class _Served:
    """An http.server on a free loopback port, in a thread of its own."""

    server: ThreadingHTTPServer
    url: str

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        serve(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeS3(_Served):
    """Checks every request's SigV4 signature with botocore's signer (the right
    secret is ``secret``, the bucket's region ``region``); answers ``fail`` queued
    statuses first, then 200."""

    def __init__(self, secret: str, region: str = "us-east-1") -> None:
        self.secret, self.region = secret, region
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.fail: list[int] = []
        self.damage = False  # flip a byte of every body received, as a bad link would
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if fake.damage and body:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.seen.append((self.command, self.path, headers))
                auth = headers.get("authorization", "")
                signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
                given = auth.rsplit("Signature=", 1)[1]
                url = f"http://{headers['host']}{self.path}"
                expected = botocore_signature(
                    self.command, url, {k: headers[k] for k in signed}, fake.secret, fake.region)
                if f"/{fake.region}/s3/" not in auth:
                    self.answer(400, b"<Error><Code>AuthorizationHeaderMalformed</Code>"
                                b"<Message>wrong region</Message></Error>", fake.region)
                elif given != expected:
                    self.answer(403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>"
                                b"The request signature we calculated does not match"
                                b"</Message></Error>")
                elif headers["x-amz-content-sha256"] not in (
                        "UNSIGNED-PAYLOAD", hashlib.sha256(body).hexdigest()):
                    self.answer(400, b"<Error><Code>XAmzContentSHA256Mismatch</Code>"
                                b"<Message>The provided 'x-amz-content-sha256' header does "
                                b"not match what was computed.</Message></Error>")
                elif headers.get("content-md5", md5(body)) != md5(body):
                    self.answer(400, b"<Error><Code>BadDigest</Code><Message>The Content-MD5 "
                                b"you specified did not match what we received.</Message>"
                                b"</Error>")
                elif fake.fail:
                    status = fake.fail.pop(0)
                    self.answer(status, b"<Error><Code>SlowDown</Code><Message>later</Message>"
                                b"</Error>" if status == 503 else b"")
                elif self.command == "POST" and self.path.endswith("?uploads="):
                    self.answer(200, b"<InitiateMultipartUploadResult><UploadId>u1"
                                b"</UploadId></InitiateMultipartUploadResult>")
                else:
                    self.send_response(200)
                    self.send_header("ETag", '"abc"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def answer(self, status: int, body: bytes, region: str | None = None) -> None:
                self.send_response(status)
                if region:
                    self.send_header("x-amz-bucket-region", region)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = handle_one

        self.serve(Handler)


@pytest.fixture
def fake_s3() -> Iterator[FakeS3]:
    fake = FakeS3("the-right-secret")
    yield fake
    fake.close()


def client_for(url: str, secret: str, token: str | None = None, **opts: Any) -> S3Client:
    creds = Credentials("AKIDFORGETEST", secret, token)
    return S3Client(lambda: creds, endpoint_url=url, region="us-east-1", **opts)


ODD_KEY = "dir/a b+c~d ü €=&?#%.txt"


def test_odd_keys_and_queries_are_signed_as_aws_checks_them(fake_s3: FakeS3) -> None:
    client = client_for(fake_s3.url, "the-right-secret")
    client.put_object("bucket", ODD_KEY, [b"data"], content_md5=md5(b"data"),
                      extra={"x-amz-object-lock-mode": "GOVERNANCE"})
    client.upload_part("bucket", ODD_KEY, "id/with+odd=chars", 3, [b"x"], content_md5=md5(b"x"))
    client.head_bucket("bucket")
    client.delete_object("bucket", ODD_KEY)
    assert [s[0] for s in fake_s3.seen] == ["PUT", "PUT", "HEAD", "DELETE"]
    put_path = fake_s3.seen[0][1]
    assert put_path == "/bucket/dir/a%20b%2Bc~d%20%C3%BC%20%E2%82%AC%3D%26%3F%23%25.txt"
    client.close()


def test_a_wrong_secret_is_an_access_error(fake_s3: FakeS3) -> None:
    store = S3Store("bucket", "forge", endpoint_url=fake_s3.url, access_key_id="AKIDFORGETEST",
                    secret_access_key="a-wrong-secret", max_attempts=1)
    with pytest.raises(StoreAccessError, match="SignatureDoesNotMatch") as info:
        store.put("k", [b"x"])
    with pytest.raises(StoreAccessError):
        store.check()  # HEAD: a bare 403, no body
    assert "a-wrong-secret" not in str(info.value) + str(info.value.hint)
    store.close()


def test_a_session_token_is_sent_and_signed(fake_s3: FakeS3) -> None:
    store = S3Store("bucket", "forge", endpoint_url=fake_s3.url, access_key_id="AKIDFORGETEST",
                    secret_access_key="the-right-secret", session_token="the-session-token")
    store.put("k", [b"x"])  # the fake checks the signature, the token included
    _, _, headers = fake_s3.seen[-1]
    assert headers["x-amz-security-token"] == "the-session-token"
    assert "x-amz-security-token" in headers["authorization"]
    store.close()


def test_a_refusal_sent_before_the_body_is_read_is_an_access_error() -> None:
    """A server may refuse (wrong signature) and close while a big part is still going
    up: its answer counts, not the dropped connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>"
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)
        conn.close()  # the unread body makes this a reset

    threading.Thread(target=refuse, daemon=True).start()
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
                    access_key_id="AKIDFORGETEST", secret_access_key="a-wrong-secret",
                    max_attempts=1)
    with pytest.raises(StoreAccessError, match="SignatureDoesNotMatch"):
        store.put("k", [os.urandom(DEFAULT_PART_SIZE)])  # one PutObject
    store.close()
    listener.close()


def test_throttling_and_5xx_are_retried(fake_s3: FakeS3) -> None:
    waits: list[float] = []
    client = client_for(fake_s3.url, "the-right-secret", max_attempts=3, sleep=waits.append)
    fake_s3.fail = [503, 500]
    client.put_object("bucket", "k", [b"x"], content_md5=md5(b"x"))  # third attempt works
    assert len(fake_s3.seen) == 3 and len(waits) == 2
    fake_s3.fail = [503, 503, 503]
    with pytest.raises(S3ResponseError) as info:
        client.put_object("bucket", "k", [b"x"], content_md5=md5(b"x"))
    assert info.value.code == "SlowDown" and len(fake_s3.seen) == 6
    fake_s3.fail = [400]  # not retried
    with pytest.raises(S3ResponseError):
        client.head_bucket("bucket")
    assert len(fake_s3.seen) == 7
    client.close()


def test_a_body_damaged_on_the_way_is_refused(fake_s3: FakeS3) -> None:
    """Every upload is bound to its signed request by a digest the store checks: a
    single put and a multipart part alike fail rather than store other bytes."""
    store = S3Store("bucket", "forge", endpoint_url=fake_s3.url, access_key_id="AKIDFORGETEST",
                    secret_access_key="the-right-secret", max_attempts=1,
                    part_size=MIN_PART_SIZE)
    store.put("fine", [b"sealed bytes"])
    assert fake_s3.seen[-1][2]["x-amz-content-sha256"] == hashlib.sha256(
        b"sealed bytes").hexdigest()
    fake_s3.damage = True
    with pytest.raises(StoreError, match="XAmzContentSHA256Mismatch"):
        store.put("k", [b"sealed bytes"])
    with pytest.raises(StoreError, match="XAmzContentSHA256Mismatch"):
        store.put("big", iter([os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE)]))  # two parts
    assert any("partNumber=1" in path for _method, path, _h in fake_s3.seen)
    # A sealed segment goes up signed with the digest its writer took as it sealed it.
    fake_s3.damage = False
    store.put_sealed("segment", [b"sealed ", b"segment"],
                     hashlib.sha256(b"sealed segment").hexdigest())
    assert fake_s3.seen[-1][2]["x-amz-content-sha256"] == hashlib.sha256(
        b"sealed segment").hexdigest()
    with pytest.raises(StoreError, match="XAmzContentSHA256Mismatch"):
        store.put_sealed("wrong", [b"sealed segment"], hashlib.sha256(b"other").hexdigest())
    store.close()


def test_a_bucket_in_another_region_is_followed_there() -> None:
    fake = FakeS3("the-right-secret", region="eu-west-1")
    try:
        store = S3Store("bucket", "forge", endpoint_url=fake.url, access_key_id="AKIDFORGETEST",
                        secret_access_key="the-right-secret")  # region: us-east-1
        store.check()
        store.put("k", [b"x"])
        assert len(fake.seen) == 3  # one refused, then both in eu-west-1
        assert store._client.region == "eu-west-1"
        store.close()
    finally:
        fake.close()


# --- real S3 (moto) ------------------------------------------------------------------


def test_odd_key_round_trip_through_moto(s3_server: Any, s3_bucket: str) -> None:
    client = client_for(s3_server.endpoint_url, s3_server.secret_access_key)
    data = os.urandom(1000)
    client.put_object(s3_bucket, ODD_KEY, [data[:10], data[10:]], content_md5=md5(data))
    got = client.get_object(s3_bucket, ODD_KEY)
    assert b"".join(got["Body"].iter_chunks(256)) == data
    assert client.head_object(s3_bucket, ODD_KEY)["ContentLength"] == len(data)
    assert client.list_objects_v2(s3_bucket, "dir/a b+")["Contents"] == [{"Key": ODD_KEY}]
    ranged = client.get_object(s3_bucket, ODD_KEY, range_start=900, if_match=got["ETag"])
    assert b"".join(ranged["Body"].iter_chunks(256)) == data[900:]
    client.delete_object(s3_bucket, ODD_KEY)
    assert client.list_objects_v2(s3_bucket, "")["Contents"] == []
    # boto3 sees the same key.
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents") is None
    client.close()


def test_a_body_of_many_pieces_goes_up_whole(s3_server: Any, s3_bucket: str) -> None:
    """Pieces are gathered into few system calls (more than one batch here, empty
    pieces among them, and sends the socket takes only in part): the object is their
    bytes in order."""
    client = client_for(s3_server.endpoint_url, s3_server.secret_access_key)
    rng = random.Random(7)
    pieces = [os.urandom(rng.choice([0, 1, 100, 4096, 65552])) for _ in range(3000)]
    data = b"".join(pieces)
    client.put_object(s3_bucket, "many", pieces,
                      payload_sha256=hashlib.sha256(data).hexdigest())
    assert b"".join(client.get_object(s3_bucket, "many")["Body"].iter_chunks(1 << 20)) == data
    client.close()


def test_listing_pages(s3_server: Any, s3_bucket: str) -> None:
    s3 = s3_server.client()
    for i in range(1005):  # S3 pages at 1,000 keys
        s3.put_object(Bucket=s3_bucket, Key=f"forge/site/k{i:04d}", Body=b"")
    with S3Store(s3_bucket, "forge/site", endpoint_url=s3_server.endpoint_url,
                 access_key_id=s3_server.access_key_id,
                 secret_access_key=s3_server.secret_access_key) as store:
        assert sorted(store.list()) == [f"k{i:04d}" for i in range(1005)]


# --- web identity (the OIDC action's token file) -----------------------------------------


class FakeSts(_Served):
    """AssumeRoleWithWebIdentity as STS answers it; records each request's form."""

    def __init__(self, refuse: bool = False, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.forms: list[dict[str, list[str]]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.forms.append(parse_qs(body.decode()))
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if refuse:
                    status, reply = 403, (
                        b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not "
                        b"authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                        b"</Error></ErrorResponse>")
                else:
                    expires = (datetime.now(UTC) + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
                    status, reply = 200, (
                        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/"
                        "doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials>"
                        f"<AccessKeyId>ASIATEMP{len(fake.forms)}</AccessKeyId>"
                        "<SecretAccessKey>temp-secret</SecretAccessKey>"
                        "<SessionToken>temp-token</SessionToken>"
                        f"<Expiration>{expires}</Expiration></Credentials>"
                        "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                    ).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.serve(Handler)


@pytest.fixture
def fake_sts() -> Iterator[Callable[..., FakeSts]]:
    made: list[FakeSts] = []

    def make(**opts: Any) -> FakeSts:
        made.append(FakeSts(**opts))
        return made[-1]

    yield make
    for one in made:
        one.close()


ROLE = "arn:aws:iam::123456789012:role/forge-backup"


def token_file(tmp_path: Path) -> str:
    path = tmp_path / "oidc-token"
    path.write_text("the.jwt.token\n")
    return str(path)


def test_web_identity_request_shape(tmp_path: Path, fake_sts: Callable[..., FakeSts]) -> None:
    sts = fake_sts()
    identity = WebIdentity(token_file(tmp_path), ROLE, "forge-42-1", sts.url)
    creds, expires = assume_role_with_web_identity(identity, "eu-central-1")
    assert creds == Credentials("ASIATEMP1", "temp-secret", "temp-token")
    assert expires > datetime.now(UTC).timestamp() + 3000
    assert sts.forms == [{"Action": ["AssumeRoleWithWebIdentity"], "Version": ["2011-06-15"],
                          "RoleArn": [ROLE], "RoleSessionName": ["forge-42-1"],
                          "WebIdentityToken": ["the.jwt.token"]}]
    assert "authorization" not in sts.headers[0]  # the token is the proof: unsigned


def test_temporary_keys_are_renewed_before_they_expire() -> None:
    now = [1000.0]
    fetched: list[int] = []

    def fetch() -> tuple[Credentials, float]:
        fetched.append(1)
        return Credentials(f"K{len(fetched)}", "s", "t"), now[0] + 3600

    creds = Refreshing(fetch, clock=lambda: now[0])
    assert creds().access_key_id == "K1"
    now[0] += 3000  # 10 minutes left: still good
    assert creds().access_key_id == "K1"
    now[0] += 400  # under 5 minutes left: renewed
    assert creds().access_key_id == "K2"


def test_a_refused_role_is_an_access_error(
    tmp_path: Path, fake_sts: Callable[..., FakeSts]
) -> None:
    sts = fake_sts(refuse=True)
    identity = WebIdentity(token_file(tmp_path), ROLE, None, sts.url)
    with pytest.raises(CredentialsRefusedError):
        assume_role_with_web_identity(identity, "us-east-1")
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9", web_identity=identity)
    with pytest.raises(StoreAccessError, match="AccessDenied") as info:
        store.check()
    assert "the.jwt.token" not in str(info.value)
    store.close()


def test_web_identity_through_moto_sts(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    """The OIDC path end to end: STS on the lab server hands out keys, S3 takes them."""
    identity = WebIdentity(token_file(tmp_path), ROLE, "forge-test", s3_server.endpoint_url)
    with S3Store(s3_bucket, "forge", endpoint_url=s3_server.endpoint_url,
                 web_identity=identity) as store:
        store.put("k", [b"through STS"])
        assert store.read_bytes("k") == b"through STS"


def test_missing_token_file_is_an_access_error(tmp_path: Path) -> None:
    identity = WebIdentity(str(tmp_path / "gone"), ROLE)
    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9", web_identity=identity)
    with pytest.raises(StoreError, match="web identity token file"):
        store.check()
    store.close()


def test_the_s3_store_does_not_load_boto3() -> None:
    code = ("import sys, forge_ci.store.s3, forge_ci.backup.session; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
