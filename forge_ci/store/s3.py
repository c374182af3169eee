"""``s3://bucket/prefix`` - any S3-compatible endpoint, through forge's own small client
(:mod:`forge_ci.store.s3client`; boto3 is loaded only for credentials it alone finds).

Atomicity comes from S3 itself: a PutObject or a CompleteMultipartUpload makes the
whole object visible at once. Streams of unknown length are buffered one part at a
time: if the stream ends within the first part it goes up as a single PutObject,
otherwise as a multipart upload whose part size starts at ``part_size`` (>= 5 MiB)
and doubles every ``grow_every`` parts, so 10,000 parts reach S3's 5 TiB object limit.
Parts go up from the store's own threads, up to ``parts_in_flight`` per upload
(default 1: the next part fills while the previous one travels); a part is cut from
the buffer only once there is room for it, so memory stays at about
``parts_in_flight + 1`` parts per put. Any failure or interruption (KeyboardInterrupt too)
aborts the multipart upload before the exception propagates; uploads orphaned by a
killed process are removed by :meth:`S3Store.cleanup` (a bucket lifecycle rule
"AbortIncompleteMultipartUpload" is a good second net).

Every upload is bound to its signed request, so the store rejects bytes damaged in
transit: by the body's SHA-256, signed as SigV4's payload hash (which S3 recomputes;
SHA-256 costs this CPU less than half of what MD5 does), or by a signed Content-MD5
where Object Lock demands that header (a retention set here, or a bucket that locks
objects by default: its first refusal switches the store to Content-MD5). No CRC
checksums, which many S3-compatible stores reject or mangle. Retries:
the AWS SDKs' "standard" mode (``max_attempts`` attempts in all). Reads resume after a
dropped connection with a Range request pinned to the ETag. One client (thread-safe)
serves every thread; its connection pool keeps ``max_pool_connections`` keep-alive
connections, enough for the backup engine's uploader threads plus their parts.

Settings come from the caller only (:func:`forge_ci.backup.session.s3_options` builds
them from forge.yml and the command's environment): ``endpoint_url`` (None: AWS S3,
``region`` (None: us-east-1) and static keys. Without keys, a ``web_identity`` (the
token file the OIDC action wrote and the role) is exchanged at STS for temporary keys;
without either, boto3's default credential chain supplies them (a profile, an
instance role); see :mod:`forge_ci.store.credentials`.

Optional Object Lock: ``retention_mode`` ("GOVERNANCE" or "COMPLIANCE") and
``retention_days`` set a retain-until date on every put (the bucket must have been
created with Object Lock enabled).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from forge_ci._malloc import READ_SIZE
from forge_ci.store.base import ObjectStore, check_key, check_prefix
from forge_ci.store.credentials import (
    CredentialsRefusedError,
    NoCredentialsError,
    WebIdentity,
    provider,
)
from forge_ci.store.errors import (
    BucketNotFoundError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreUnreachableError,
)
from forge_ci.store.s3client import Body, S3Client, S3NetworkError, S3ResponseError

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 6 * 1024 * 1024  # two in memory (one sending, one filling); 5 TiB fits
_FEED = 1024 * 1024
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
    }
)
_STORE_ERRORS = (S3ResponseError, S3NetworkError, NoCredentialsError, CredentialsRefusedError)
RetentionMode = Literal["GOVERNANCE", "COMPLIANCE"]
T = TypeVar("T")


def part_size_for(part_number: int, base: int = DEFAULT_PART_SIZE, grow_every: int = 1000) -> int:
    """Size of part ``part_number`` (1-based): ``base`` doubled every ``grow_every``
    parts, capped at 5 GiB. With the defaults 10,000 parts hold over 5 TiB."""
    return min(MAX_PART_SIZE, base << ((part_number - 1) // grow_every))


def _md5(pieces: Sequence[bytes]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for piece in pieces:
        h.update(piece)
    return base64.b64encode(h.digest()).decode()


def _sha256(pieces: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece)
    return h.hexdigest()


def _wants_md5(exc: S3ResponseError) -> bool:
    """S3's refusal of an upload without Content-MD5 into a bucket with Object Lock."""
    message = str(exc.response["Error"].get("Message", ""))
    return exc.status == 400 and ("Content-MD5" in message or "ObjectLock" in exc.code)


def _pieces(chunks: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """Slice huge caller chunks so the part buffer never overshoots by more than 1 MiB."""
    for chunk in chunks:
        if len(chunk) <= _FEED:
            yield chunk
            continue
        with memoryview(chunk) as view:
            for pos in range(0, len(view), _FEED):
                yield view[pos : pos + _FEED]


class _Buffer:
    """Pieces waiting to become a part; cutting a part copies each byte once."""

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque()
        self.size = 0

    def add(self, piece: bytes | memoryview) -> None:
        if not len(piece):
            return
        # A slice of a huge caller chunk is copied: it must not keep the chunk alive.
        self._pieces.append(piece if isinstance(piece, bytes) else bytes(piece))
        self.size += len(piece)

    def take(self, size: int) -> list[bytes]:
        """Remove and return the first ``size`` bytes, as pieces (no copy but the one
        piece that straddles the cut)."""
        head: list[bytes] = []
        need = size
        while need:
            piece = self._pieces.popleft()
            if len(piece) > need:  # split the piece that straddles the cut
                self._pieces.appendleft(piece[need:])
                piece = piece[:need]
            head.append(piece)
            need -= len(piece)
        self.size -= size
        return head


def _safe_endpoint(endpoint: str | None) -> str:
    """The endpoint without any user:password@ part, for messages."""
    if not endpoint:
        return "AWS S3"
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        web_identity: WebIdentity | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        min_part_size: int = MIN_PART_SIZE,
        grow_every: int = 1000,
        retention_mode: RetentionMode | None = None,
        retention_days: int | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        addressing_style: Literal["auto", "path", "virtual"] | None = None,
        parts_in_flight: int = 1,
        max_pool_connections: int = 32,
    ) -> None:
        """``min_part_size`` may be lowered only for test stores that allow it."""
        if part_size < min_part_size:
            raise ValueError(f"part_size must be at least {min_part_size} bytes")
        if parts_in_flight < 1:
            raise ValueError("parts_in_flight must be at least 1")
        if (retention_mode is None) != (retention_days is None):
            raise ValueError("retention_mode and retention_days go together")
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/") + "/") if prefix.strip("/") else ""
        endpoint_url = endpoint_url or None
        self.endpoint = _safe_endpoint(endpoint_url)
        self.url = f"s3://{bucket}/{self.prefix}"
        self._part_size, self._grow_every = part_size, grow_every
        self._retention = (retention_mode, retention_days) if retention_mode else None
        self._md5 = self._retention is not None  # else SHA-256 binds bodies (see above)
        self._max_attempts = max_attempts
        self._parts_in_flight = parts_in_flight
        self._part_pool: ThreadPoolExecutor | None = None
        self._part_pool_lock = threading.Lock()
        region = region or "us-east-1"
        self._client = S3Client(
            provider(access_key_id, secret_access_key, session_token, web_identity, region),
            endpoint_url=endpoint_url,
            region=region,
            addressing_style=addressing_style,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )

    # --- contract -------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        name = self.prefix + check_key(key)
        if (isinstance(chunks, list | tuple) and all(isinstance(c, bytes) for c in chunks)
                and sum(len(c) for c in chunks) <= self._part_size):
            # An object sealed whole by the caller (a pack): one PUT, no copy of it.
            self._put_single(name, key, list(chunks))
            return sum(len(c) for c in chunks)
        buf = _Buffer()
        upload: _MultipartUpload | None = None
        try:
            for piece in _pieces(chunks):  # errors of the caller's iterable propagate unchanged
                buf.add(piece)
                limit = upload.next_size() if upload else self._part_size
                if buf.size > limit:  # strictly: the last part must never be empty
                    upload = upload or _MultipartUpload(self, name, key)
                    upload.make_room()  # before cutting: one part travels, one fills
                    upload.send(buf.take(limit))
            rest = buf.take(buf.size)
            if upload is None:
                self._put_single(name, key, rest)
                return sum(len(p) for p in rest)
            upload.make_room()
            upload.send(rest)
            upload.complete()
            return upload.size
        except BaseException:
            if upload is not None:
                upload.abort()
            raise

    def put_sealed(self, key: str, pieces: Sequence[bytes], sha256: str) -> int:
        # One PUT whatever its size (the caller holds it whole: no part is cut).
        self._put_single(self.prefix + check_key(key), key, pieces, sha256)
        return sum(len(p) for p in pieces)

    def get(self, key: str) -> Iterator[bytes]:
        name = self.prefix + check_key(key)
        response = self._call("get", key, lambda: self._client.get_object(self.bucket, name))
        return self._stream(name, key, response)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        name = self.prefix + check_key(key)
        head = self._call(
            "stat", key, lambda: self._client.head_object(self.bucket, name)
        )
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + check_prefix(prefix)
        token: str | None = None
        while True:
            page = self._call(
                "list", None, partial(self._client.list_objects_v2, self.bucket, full, token))
            for obj in page["Contents"]:
                yield obj["Key"][len(self.prefix) :]
            token = page.get("NextContinuationToken")
            if not token:
                return

    def delete(self, key: str) -> None:
        name = self.prefix + check_key(key)
        self._call("delete", key, lambda: self._client.delete_object(self.bucket, name))

    def cleanup(self, older_than: float = 24 * 3600.0) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        stale = [
            (u["Key"], u["UploadId"]) for u in self.incomplete_uploads() if u["Initiated"] < cutoff
        ]
        for name, upload_id in stale:
            self._abort(name, upload_id)
        return len(stale)

    def _abort(self, name: str, upload_id: str) -> None:
        self._call(
            "abort upload",
            name,
            lambda: self._client.abort_multipart_upload(self.bucket, name, upload_id),
        )

    def incomplete_uploads(self) -> Iterator[dict[str, Any]]:
        """Multipart uploads under this store's prefix not yet completed or aborted
        (each as returned by ListMultipartUploads: Key, UploadId, Initiated...)."""
        marker: tuple[str | None, str | None] = (None, None)
        while True:
            page = self._call(
                "list uploads", None,
                partial(self._client.list_multipart_uploads, self.bucket, self.prefix, *marker))
            yield from page["Uploads"]
            if "NextKeyMarker" not in page:
                return
            marker = (page["NextKeyMarker"], page["NextUploadIdMarker"])

    def check(self) -> None:
        """Fail early, with a clear error, if the bucket is missing or unreachable."""
        self._call("open bucket", None, lambda: self._client.head_bucket(self.bucket))

    def close(self) -> None:
        with self._part_pool_lock:
            pool, self._part_pool = self._part_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # --- helpers --------------------------------------------------------------------

    def _put_single(self, name: str, key: str, pieces: Sequence[bytes],
                    sha256: str | None = None) -> None:
        self._bound("put", key, pieces, lambda md5, sha: self._client.put_object(
            self.bucket, name, pieces, content_md5=md5, payload_sha256=sha,
            extra=self._lock_headers()), sha256)

    def _bound(self, op: str, key: str, pieces: Sequence[bytes],
               send: Callable[[str | None, str | None], T], sha256: str | None = None) -> T:
        """``send(content_md5, payload_sha256)`` with the digest that binds ``pieces``
        to the signed request: SHA-256 (``sha256`` when the caller has it), or
        Content-MD5 where Object Lock wants it."""
        if not self._md5:
            sha = sha256 or _sha256(pieces)
            try:
                return send(None, sha)
            except S3ResponseError as exc:
                if not _wants_md5(exc):
                    raise self._translate(exc, op, key) from exc
                self._md5 = True  # the bucket locks objects by default: from now on
            except _STORE_ERRORS as exc:
                raise self._translate(exc, op, key) from exc
        md5 = _md5(pieces)
        return self._call(op, key, lambda: send(md5, None))

    def _parts(self) -> ThreadPoolExecutor:
        """Threads sending multipart parts, shared by every put of this store."""
        with self._part_pool_lock:
            if self._part_pool is None:
                self._part_pool = ThreadPoolExecutor(
                    max_workers=8 * self._parts_in_flight, thread_name_prefix="forge-s3-part")
            return self._part_pool

    def _lock_headers(self) -> dict[str, str]:
        if self._retention is None:
            return {}
        mode, days = self._retention
        until = datetime.now(UTC) + timedelta(days=days or 0)
        return {"x-amz-object-lock-mode": mode,
                "x-amz-object-lock-retain-until-date": until.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _stream(self, name: str, key: str, response: dict[str, Any]) -> Iterator[bytes]:
        etag, total, pos, retries = response["ETag"], response["ContentLength"], 0, 0
        body: Body = response["Body"]
        try:
            while True:
                try:
                    for chunk in body.iter_chunks(READ_SIZE):
                        pos += len(chunk)
                        yield chunk
                    if pos >= total:
                        return
                    raise S3NetworkError(f"connection closed after {pos} of {total} bytes")
                except S3NetworkError as exc:
                    retries += 1
                    if retries >= self._max_attempts:
                        raise self._translate(exc, "read", key) from exc
                body.close()
                body = self._reopen(name, key, pos, etag)
        finally:
            body.close()

    def _reopen(self, name: str, key: str, start: int, etag: str) -> Body:
        """Resume a read where the connection dropped, refusing a replaced object."""
        response = self._call(
            "read",
            key,
            lambda: self._client.get_object(self.bucket, name, range_start=start, if_match=etag),
        )
        body: Body = response["Body"]
        return body

    def _call(self, op: str, key: str | None, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _STORE_ERRORS as exc:
            raise self._translate(exc, op, key) from exc

    def _translate(self, exc: Exception, op: str, key: str | None) -> StoreError:
        where = f"{self.url}: {op}" + (f" {key!r}" if key else "")
        response = getattr(exc, "response", None)  # ours, or a botocore ClientError
        if isinstance(response, dict) and "Error" in response:
            return self._translate_client_error(response, where, key)
        if isinstance(exc, NoCredentialsError):
            return StoreAccessError(
                f"{where}: no usable AWS credentials ({exc})",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an OIDC role)",
            )
        if isinstance(exc, CredentialsRefusedError):
            return StoreAccessError(
                f"{where}: STS refused to assume the role ({exc.code})",
                hint="check AWS_ROLE_ARN and the role's trust policy for this repository",
            )
        if isinstance(exc, S3NetworkError):
            cause = exc.__cause__
            reason = type(cause).__name__ if cause else "connection closed early"
            return StoreUnreachableError(
                f"{where}: cannot reach {self.endpoint} ({reason}, "
                f"after {self._max_attempts} attempts)",
                hint="check AWS_ENDPOINT_URL and the network; nothing partial was stored",
            )
        return StoreError(f"{where} failed: {exc}")

    def _translate_client_error(
        self, response: dict[str, Any], where: str, key: str | None
    ) -> StoreError:
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (key is None and status == 404):
            return BucketNotFoundError(
                f"{where}: bucket {self.bucket!r} does not exist at {self.endpoint}",
                hint="create the bucket, or fix `backup.store` in forge.yml / AWS_ENDPOINT_URL",
            )
        if code in ("NoSuchKey", "404", "NotFound") and key is not None:
            return ObjectNotFoundError(self.url, key)
        if code in _ACCESS_CODES or status == 403:
            return StoreAccessError(
                f"{where}: access denied by {self.endpoint} ({code or status})",
                hint="check the AWS credentials (or OIDC role) and the bucket policy: forge "
                "needs Get/Put/DeleteObject, ListBucket and AbortMultipartUpload",
            )
        if code == "PreconditionFailed":
            return StoreError(
                f"{where}: the object was replaced while being read", hint="run the command again"
            )
        hint = None
        if self._retention and code == "InvalidRequest":
            hint = "Object Lock retention needs a bucket created with Object Lock enabled"
        message = str(error.get("Message", "")).strip()
        return StoreError(f"{where} failed: {code or status} {message}".rstrip(), hint=hint)


class _MultipartUpload:
    """One multipart upload in flight; ``abort`` is safe to call at any time.

    :meth:`send` hands each part to the store's part threads (call :meth:`make_room`
    first, before cutting the part, to bound memory); the first failed part raises
    from the next ``make_room``/``send`` or from :meth:`complete`.
    """

    def __init__(self, store: S3Store, name: str, key: str) -> None:
        self._store, self._name, self._key = store, name, key
        self._client = store._client
        response = store._call(
            "start upload",
            key,
            lambda: self._client.create_multipart_upload(
                store.bucket, name, extra=store._lock_headers()
            ),
        )
        self.upload_id: str = response["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self._sending: list[Future[dict[str, Any]]] = []
        self._count = 0
        self.size = 0

    def next_size(self) -> int:
        return part_size_for(self._count + 1, self._store._part_size, self._store._grow_every)

    def send(self, data: list[bytes]) -> None:
        number = self._count + 1
        if number > MAX_PARTS:
            raise StoreError(
                f"{self._store.url}: {self._key!r} exceeds S3's 10,000 parts",
                hint="raise part_size",
            )
        self.make_room()
        self._sending.append(self._store._parts().submit(self._send, number, data))
        self._count = number
        self.size += sum(len(p) for p in data)

    def _send(self, number: int, data: list[bytes]) -> dict[str, Any]:
        response = self._store._bound(
            "upload part", self._key, data, lambda md5, sha: self._client.upload_part(
                self._store.bucket, self._name, self.upload_id, number, data,
                content_md5=md5, payload_sha256=sha))
        return {"PartNumber": number, "ETag": response["ETag"]}

    def make_room(self) -> None:
        """Wait until another part may travel; raises a failed part's error."""
        while len(self._sending) >= self._store._parts_in_flight:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        self.parts.append(self._sending.pop(0).result())

    def complete(self) -> None:
        while self._sending:
            self._settle_oldest()
        self._store._call(
            "complete upload",
            self._key,
            lambda: self._client.complete_multipart_upload(
                self._store.bucket, self._name, self.upload_id, self.parts
            ),
        )

    def abort(self) -> None:
        # Parts still travelling must end first, or they could outlive the abort.
        # Best effort: cleanup() and bucket lifecycle rules catch what is left.
        for future in self._sending:
            future.cancel()
        for future in self._sending:
            if not future.cancelled():
                with contextlib.suppress(BaseException):
                    future.result()
        self._sending.clear()
        with contextlib.suppress(*_STORE_ERRORS):
            self._client.abort_multipart_upload(self._store.bucket, self._name, self.upload_id)
