"""A small S3 client: exactly the calls the S3 store makes, over the standard library.

Why not boto3: its service model and endpoint rules alone hold about 20 MiB resident,
a quarter of a backup's memory budget. This client speaks the REST API directly:
requests are signed with SigV4 (:mod:`forge_ci.store.sigv4`), sent over
``http.client`` keep-alive connections from a pool shared by every thread (at most
``max_pool_connections`` kept idle), and answered as the dicts boto3 would give for
the same call, so callers read ``response["ETag"]`` the same way.

A bucket in another region than the client's is followed there once its first answer
names the region (``x-amz-bucket-region``), as the AWS SDKs do.

Addressing: a custom endpoint is addressed path-style (``endpoint/bucket/key``); AWS
virtual-hosted (``bucket.s3.region.amazonaws.com/key``) unless the bucket name does
not fit in a host name (path-style then), or ``addressing_style`` says otherwise.

Errors: an error answer raises :class:`S3ResponseError` (its ``response`` shaped like
botocore's: ``Error.Code``, ``Error.Message``, ``ResponseMetadata.HTTPStatusCode``);
a connection that cannot be made, drops or times out raises :class:`S3NetworkError`;
credentials that cannot be had raise the errors of :mod:`forge_ci.store.credentials`.
Retries follow the AWS SDKs' "standard" mode: up to ``max_attempts`` attempts in all
for connection failures, 5xx answers, throttling and S3's transient codes, with
jittered exponential backoff (at most 20 s).
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus, urlsplit
from xml.sax.saxutils import escape

from forge_ci.store import _xml, sigv4
from forge_ci.store.credentials import Provider

if TYPE_CHECKING:
    import ssl

Addressing = Literal["auto", "path", "virtual"]
MAX_BACKOFF = 20.0
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException", "InternalError",
})
_WRONG_REGION = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed"})
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_NETWORK = (OSError, http.client.HTTPException)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_IOV_MAX = 1024  # pieces per sendmsg (Linux's limit)


class S3ResponseError(Exception):
    """S3 answered with an error. ``response`` is shaped like botocore's ClientError's."""

    def __init__(self, operation: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code or status} {message}".rstrip())
        self.operation = operation
        self.response: dict[str, Any] = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    @property
    def code(self) -> str:
        return str(self.response["Error"]["Code"])

    @property
    def status(self) -> int:
        return int(self.response["ResponseMetadata"]["HTTPStatusCode"])


class S3NetworkError(Exception):
    """The endpoint could not be reached, or the connection dropped or timed out."""


def parse_error(body: bytes) -> tuple[str, str]:
    """(code, message) of an S3 XML error body; ("", "") if it is not one."""
    try:
        root = _xml.parse(body)
    except _xml.ParseError:
        return "", ""
    if _xml.local(root.tag) != "Error":
        return "", ""
    return _xml.child(root, "Code").strip(), _xml.child(root, "Message").strip()


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based)."""
    return random.random() * min(MAX_BACKOFF, 2.0 ** (attempt - 1))


class _Pool:
    """Keep-alive connections to one host, shared by every thread."""

    def __init__(self, scheme: str, host: str, port: int | None, *, connect_timeout: float,
                 read_timeout: float, keep: int) -> None:
        self._scheme, self._host, self._port = scheme, host, port
        self._connect_timeout, self._read_timeout, self._keep = \
            connect_timeout, read_timeout, keep
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None

    def get(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self._scheme == "https":
            if self._context is None:
                import ssl

                self._context = ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(
                self._host, self._port, timeout=self._connect_timeout)
        return conn

    def connect(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(self._read_timeout)

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Body:
    """A GET response's bytes, read as they arrive (botocore's StreamingBody subset)."""

    def __init__(self, pool: _Pool, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self._pool, self._response = pool, response
        self._conn: http.client.HTTPConnection | None = conn

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        """Chunks of at most ``size`` bytes until the answer ends (early, if the
        connection closed early: the caller compares with the length it expects)."""
        while self._conn is not None:
            try:
                chunk = self._response.read(size)
            except _NETWORK as exc:
                self.close()
                raise S3NetworkError(f"connection dropped ({type(exc).__name__})") from exc
            if not chunk:
                self._finish()
                return
            yield chunk

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        whole = self._response.isclosed() and not self._response.length
        if whole and not self._response.will_close:
            self._pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Give up the rest: the connection is closed, not drained."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class Meta:
    """Where the client sends its requests (named as boto3's ``client.meta``)."""

    region_name: str
    endpoint_url: str


def _send_body(conn: http.client.HTTPConnection,
               body: Sequence[bytes]) -> http.client.HTTPResponse:
    """Send ``body`` and read the answer's head. A server refusing the request (a wrong
    signature, say) may answer and close before the body is all sent: that answer is
    read rather than reported as a dropped connection."""
    try:
        _send_all(conn, body)
    except OSError:
        try:
            early = conn.getresponse()
        except (OSError, http.client.HTTPException):
            early = None
        if early is None or early.status < 300:
            raise
        return early
    return conn.getresponse()


def _payload_hash(content_md5: str | None, payload_sha256: str | None) -> str | None:
    if payload_sha256 is None and content_md5 is None:
        raise ValueError("an upload needs its body's SHA-256 or its Content-MD5")
    return payload_sha256  # None: UNSIGNED-PAYLOAD, the signed Content-MD5 binds the body


def _md5_header(content_md5: str | None) -> dict[str, str]:
    return {} if content_md5 is None else {"content-md5": content_md5}


def _send_all(conn: http.client.HTTPConnection, body: Sequence[bytes]) -> None:
    """``body``'s pieces in order. On a plain TCP socket they go a batch per system
    call (``sendmsg`` gathers them: a sealed object is dozens of 64 KiB chunks, and a
    ``send`` each cost a third of the upload path's system time); TLS sends each."""
    sock = conn.sock
    if type(sock) is not socket.socket:
        for piece in body:
            conn.send(piece)
        return
    views = [memoryview(piece) for piece in body if len(piece)]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first : first + _IOV_MAX])
        while sent:  # drop what went; a piece sent in part is sliced
            head = views[first]
            if sent < len(head):
                views[first] = head[sent:]
                break
            sent -= len(head)
            first += 1


class _Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class S3Client:
    """One endpoint and one set of credentials; thread-safe."""

    def __init__(
        self,
        credentials: Provider,
        *,
        endpoint_url: str | None,
        region: str,
        addressing_style: Addressing | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._credentials, self.region = credentials, region
        self._custom = bool(endpoint_url)
        parts = urlsplit(endpoint_url or f"https://s3.{region}.{sigv4.aws_domain(region)}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the S3 endpoint must be an http(s):// URL")
        self._scheme, self._hostname, self._port = parts.scheme, parts.hostname, parts.port
        self.meta = Meta(region, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
        self._base = parts.path.rstrip("/")
        self._addressing: Addressing = addressing_style or ("path" if self._custom else "auto")
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._pool_args = {"connect_timeout": connect_timeout, "read_timeout": read_timeout,
                           "keep": max_pool_connections}
        self._pools: dict[str, _Pool] = {}
        self._pools_lock = threading.Lock()

    # --- addressing ---------------------------------------------------------------

    def _virtual(self, bucket: str) -> bool:
        if self._addressing == "path":
            return False
        fits = bool(_DNS_BUCKET.fullmatch(bucket)) and "." not in bucket
        return self._addressing == "virtual" or fits

    def _where(self, bucket: str, key: str | None) -> tuple[str, str]:
        """(host, encoded path) of ``bucket``/``key``."""
        if self._virtual(bucket):
            host, path = f"{bucket}.{self._hostname}", "/" + (key or "")
        else:
            host = self._hostname
            path = f"/{bucket}" + (f"/{key}" if key is not None else "")
        return host, sigv4.uri_encode_path(self._base + path)

    def _move(self, region: str) -> None:
        self.region = region
        self.meta = Meta(region, self.meta.endpoint_url)
        if not self._custom:
            self._hostname = f"s3.{region}.{sigv4.aws_domain(region)}"
            self.meta = Meta(region, f"https://{self._hostname}")

    def _pool(self, host: str) -> _Pool:
        with self._pools_lock:
            pool = self._pools.get(host)
            if pool is None:
                pool = self._pools[host] = _Pool(
                    self._scheme, host, self._port, **self._pool_args)  # type: ignore[arg-type]
            return pool

    def _host_header(self, host: str) -> str:
        default = 443 if self._scheme == "https" else 80
        return host if self._port in (None, default) else f"{host}:{self._port}"

    # --- one request, with retries -------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str | None = None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Sequence[bytes] = (),
        payload_hash: str | None = None,
        stream: bool = False,
        redirected: bool = False,
    ) -> _Answer | tuple[http.client.HTTPResponse, http.client.HTTPConnection, _Pool]:
        host, path = self._where(bucket, key)
        canonical = sigv4.canonical_query(query or {})
        target = path + (f"?{canonical}" if canonical else "")
        pool = self._pool(host)
        size = sum(len(piece) for piece in body)
        digest = payload_hash or (sigv4.UNSIGNED_PAYLOAD if size else sigv4.EMPTY_SHA256)
        attempt = 0
        while True:
            attempt += 1
            creds = self._credentials()
            signed = {"host": self._host_header(host), **(headers or {})}
            sigv4.sign(creds, method, path, canonical, signed, digest, region=self.region,
                       now=datetime.now(UTC))
            conn = pool.get()
            reused = conn.sock is not None
            try:
                pool.connect(conn)
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in signed.items():
                    conn.putheader(name, value)
                if size or method in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(size))
                conn.endheaders()
                response = _send_body(conn, body)
                if stream and response.status in (200, 206):
                    return response, conn, pool
                data = response.read()
            except _NETWORK as exc:
                conn.close()
                if reused and isinstance(exc, _STALE):
                    attempt -= 1  # the server closed an idle connection: not a failure
                    continue
                if attempt >= self._max_attempts:
                    raise S3NetworkError(
                        f"{operation}: connection failed ({type(exc).__name__})") from exc
                self._sleep(backoff(attempt))
                continue
            if response.will_close:
                conn.close()
            else:
                pool.put(conn)
            # CompleteMultipartUpload may fail after its 200 status line: check its body.
            check = data and (response.status >= 300 or operation == "CompleteMultipartUpload")
            code, message = parse_error(data) if check else ("", "")
            if response.status < 300 and not code:
                return _Answer(response.status, response.headers, data)
            if response.status >= 300 and not code:
                code, message = str(response.status), response.reason
            moved = response.getheader("x-amz-bucket-region")
            if (moved and moved != self.region and not redirected
                    and (response.status in (301, 400) or code in _WRONG_REGION)):
                self._move(moved)  # as the AWS SDKs do: follow the bucket to its region
                return self._request(operation, method, bucket, key, query=query,
                                     headers=headers, body=body, payload_hash=payload_hash,
                                     stream=stream, redirected=True)
            retry = response.status in _RETRY_STATUS or code in _RETRY_CODES
            if retry and attempt < self._max_attempts:
                self._sleep(backoff(attempt))
                continue
            raise S3ResponseError(operation, response.status, code, message)

    def _call(self, operation: str, method: str, bucket: str, key: str | None = None,
              **kwargs: Any) -> _Answer:
        answer = self._request(operation, method, bucket, key, **kwargs)
        assert isinstance(answer, _Answer)
        return answer

    # --- the calls, answered like boto3 -------------------------------------------------

    def put_object(self, bucket: str, key: str, body: Sequence[bytes], *,
                   content_md5: str | None = None, payload_sha256: str | None = None,
                   extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``payload_sha256`` (hex) is signed as the payload's hash, which S3 checks
        against the body; ``content_md5`` (base64) is sent and signed when given. Give
        at least one: an unsigned body with neither would go up unchecked."""
        answer = self._call("PutObject", "PUT", bucket, key, body=body,
                            payload_hash=_payload_hash(content_md5, payload_sha256),
                            headers={**_md5_header(content_md5), **(extra or {})})
        return {"ETag": answer.headers.get("ETag", "")}

    def create_multipart_upload(self, bucket: str, key: str, *,
                                extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        answer = self._call("CreateMultipartUpload", "POST", bucket, key,
                            query={"uploads": ""}, headers=dict(extra or {}))
        return {"UploadId": _xml.child(_xml.parse(answer.body), "UploadId")}

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int,
                    body: Sequence[bytes], *, content_md5: str | None = None,
                    payload_sha256: str | None = None) -> dict[str, Any]:
        """The body's digests as for :meth:`put_object`."""
        answer = self._call("UploadPart", "PUT", bucket, key, body=body,
                            query={"partNumber": str(number), "uploadId": upload_id},
                            payload_hash=_payload_hash(content_md5, payload_sha256),
                            headers=_md5_header(content_md5))
        return {"ETag": answer.headers.get("ETag", "")}

    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str,
                                  parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{int(p['PartNumber'])}</PartNumber>"
            f"<ETag>{escape(str(p['ETag']))}</ETag></Part>" for p in parts
        ) + "</CompleteMultipartUpload>"
        data = xml.encode()
        answer = self._call("CompleteMultipartUpload", "POST", bucket, key,
                            query={"uploadId": upload_id}, body=[data],
                            headers={"content-type": "application/xml"},
                            payload_hash=sigv4.sha256_hex(data))
        return {"ETag": _xml.child(_xml.parse(answer.body), "ETag") if answer.body else ""}

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._call("AbortMultipartUpload", "DELETE", bucket, key, query={"uploadId": upload_id})

    def get_object(self, bucket: str, key: str, *, range_start: int | None = None,
                   if_match: str | None = None) -> dict[str, Any]:
        headers = {}
        if range_start is not None:
            headers["range"] = f"bytes={range_start}-"
        if if_match is not None:
            headers["if-match"] = if_match
        answer = self._request("GetObject", "GET", bucket, key, headers=headers, stream=True)
        assert isinstance(answer, tuple)
        response, conn, pool = answer
        return {"ETag": response.getheader("ETag", ""),
                "ContentLength": int(response.getheader("Content-Length", "0")),
                "Body": Body(pool, conn, response)}

    def head_object(self, bucket: str, key: str) -> dict[str, Any]:
        answer = self._call("HeadObject", "HEAD", bucket, key)
        return {"ETag": answer.headers.get("ETag", ""),
                "ContentLength": int(answer.headers.get("Content-Length", "0"))}

    def head_bucket(self, bucket: str) -> None:
        self._call("HeadBucket", "HEAD", bucket)

    def delete_object(self, bucket: str, key: str) -> None:
        self._call("DeleteObject", "DELETE", bucket, key)

    def list_objects_v2(self, bucket: str, prefix: str,
                        token: str | None = None) -> dict[str, Any]:
        """One page: ``Contents`` (each with ``Key``) and ``NextContinuationToken``
        (absent on the last page)."""
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        root = _xml.parse(self._call("ListObjectsV2", "GET", bucket, query=query).body)
        page: dict[str, Any] = {
            "Contents": [{"Key": unquote_plus(_xml.child(c, "Key"))}
                         for c in _xml.children(root, "Contents")]}
        if _xml.child(root, "IsTruncated") == "true":
            page["NextContinuationToken"] = _xml.child(root, "NextContinuationToken")
        return page

    def list_multipart_uploads(self, bucket: str, prefix: str, key_marker: str | None = None,
                               upload_id_marker: str | None = None) -> dict[str, Any]:
        """One page: ``Uploads`` (Key, UploadId, Initiated) and, unless it is the last,
        ``NextKeyMarker`` and ``NextUploadIdMarker``."""
        query = {"uploads": "", "prefix": prefix, "encoding-type": "url"}
        if key_marker:
            query["key-marker"] = key_marker
        if upload_id_marker:
            query["upload-id-marker"] = upload_id_marker
        root = _xml.parse(
            self._call("ListMultipartUploads", "GET", bucket, query=query).body)
        page: dict[str, Any] = {"Uploads": [
            {"Key": unquote_plus(_xml.child(u, "Key")), "UploadId": _xml.child(u, "UploadId"),
             "Initiated": datetime.fromisoformat(_xml.child(u, "Initiated"))}
            for u in _xml.children(root, "Upload")]}
        if _xml.child(root, "IsTruncated") == "true":
            page["NextKeyMarker"] = unquote_plus(_xml.child(root, "NextKeyMarker"))
            page["NextUploadIdMarker"] = _xml.child(root, "NextUploadIdMarker")
        return page

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
