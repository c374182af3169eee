"""S3 specifics on the lab's moto server: part sizes, Object Lock, error translation,
and real network faults through the lab's fault proxy."""

from __future__ import annotations

import os
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from lab.s3 import SECRET_ACCESS_KEY

from forge_ci.store import (
    BucketNotFoundError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreUnreachableError,
    open_store,
)
from forge_ci.store.file import FileStore
from forge_ci.store.s3 import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    S3Store,
    part_size_for,
)

from .conftest import PART, make_s3_store

SECRET = SECRET_ACCESS_KEY  # the lab's secret key: must never show up in errors


def server_view(server: Any, bucket: str) -> tuple[list[str], list[str]]:
    """(object keys, open multipart uploads) as the server itself sees them."""
    client = server.client()
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return objects, uploads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_part_size_schedule_reaches_the_object_limit() -> None:
    sizes = [part_size_for(n) for n in range(1, MAX_PARTS + 1)]
    assert sizes[0] == DEFAULT_PART_SIZE and min(sizes) >= MIN_PART_SIZE
    assert max(sizes) <= MAX_PART_SIZE
    assert sum(sizes) >= 5 * 1024**4  # S3's 5 TiB object limit fits in 10,000 parts
    assert sizes == sorted(sizes)


def test_part_size_grows_on_a_real_upload(s3_store: Callable[..., S3Store]) -> None:
    store = s3_store(grow_every=1)  # 5 MiB, 10 MiB, then the rest
    data = os.urandom(PART + 2 * PART + 1000)
    assert store.put("grow", (data[i : i + 777_777] for i in range(0, len(data), 777_777))) == len(
        data
    )
    assert store.read_bytes("grow") == data
    head = store._client.head_object(store.bucket, store.prefix + "grow")
    assert head["ETag"].strip('"').endswith("-3")


def test_prefix_isolates_stores(s3_server: Any, s3_bucket: str) -> None:
    with make_s3_store(s3_server, s3_bucket) as one:
        one.put("k", [b"1"])
        other = S3Store(
            s3_bucket,
            "other",
            endpoint_url=s3_server.endpoint_url,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,
        )
        assert list(other.list()) == [] and not other.exists("k")
        assert server_view(s3_server, s3_bucket)[0] == ["forge/site/k"]
        other.close()


def test_missing_bucket_is_named(s3_server: Any) -> None:
    store = make_s3_store(s3_server, "no-such-bucket-here")
    for action in (store.check, lambda: store.put("k", [b"x"]), lambda: list(store.list())):
        with pytest.raises(BucketNotFoundError, match="no-such-bucket-here") as info:
            action()
        assert info.value.hint
    store.close()


def test_unreachable_endpoint(s3_server: Any, s3_bucket: str) -> None:
    store = make_s3_store(
        s3_server,
        s3_bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_attempts=1,
        connect_timeout=1.0,
    )
    for action in (lambda: store.put("k", [b"x"]), lambda: store.get("k"), store.check):
        with pytest.raises(
            StoreUnreachableError, match=r"cannot reach http://127\.0\.0\.1"
        ) as info:
            action()
        assert SECRET not in str(info.value) and SECRET not in repr(store)
    store.close()


def test_endpoint_credentials_never_shown(s3_server: Any, s3_bucket: str) -> None:
    store = make_s3_store(
        s3_server,
        s3_bucket,
        endpoint_url=f"http://user:{SECRET}@127.0.0.1:{free_port()}",
        max_attempts=1,
    )
    with pytest.raises(StoreError) as info:
        store.put("k", [b"x"])
    assert SECRET not in str(info.value) and SECRET not in store.url + store.endpoint
    store.close()


@pytest.mark.parametrize(
    ("code", "status", "leaf"),
    [
        ("AccessDenied", 403, StoreAccessError),
        ("InvalidAccessKeyId", 403, StoreAccessError),
        ("SignatureDoesNotMatch", 403, StoreAccessError),
        ("NoSuchBucket", 404, BucketNotFoundError),
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("InternalError", 500, StoreError),
    ],
)
def test_client_errors_map_to_leaves(
    s3_store: Callable[..., S3Store], code: str, status: int, leaf: type[StoreError]
) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = ClientError(response, "PutObject")
    translated = s3_store()._translate(error, "write", "data/k")
    assert type(translated) is leaf
    assert SECRET not in str(translated)


def test_object_lock_retention(s3_server: Any) -> None:
    bucket = "forge-lock-" + os.urandom(4).hex()
    s3_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    with make_s3_store(s3_server, bucket, retention_mode="GOVERNANCE", retention_days=7) as store:
        store.put("small", [b"locked"])
        store.put("large", [os.urandom(PART + 10)])  # multipart carries the lock too
        # HEAD, not GetObjectRetention: moto's server answers that one with a 500.
        # moto drops the lock of multipart uploads, so only the small one is checked.
        head = s3_server.client().head_object(Bucket=bucket, Key="forge/site/small")
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=6)
        assert store.read_bytes("small") == b"locked"


def test_a_bucket_locking_objects_by_default_takes_puts(s3_server: Any) -> None:
    """Such a bucket refuses a put without Content-MD5 (S3 and moto alike), though
    forge.yml sets no retention: the store switches to Content-MD5 and goes on."""
    bucket = "forge-lock-" + os.urandom(4).hex()
    client = s3_server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    with make_s3_store(s3_server, bucket) as store:
        store.put("small", [b"locked"])
        store.put("large", [os.urandom(PART + 10)])
        assert store.read_bytes("small") == b"locked"
        assert store.size("large") == PART + 10


def test_object_lock_needs_a_lock_bucket(s3_store: Callable[..., S3Store]) -> None:
    store = s3_store(retention_mode="COMPLIANCE", retention_days=1)
    with pytest.raises(StoreError) as info:
        store.put("k", [b"x"])
    assert info.value.hint and "Object Lock" in info.value.hint


def test_cleanup_aborts_orphaned_uploads(
    s3_server: Any, s3_bucket: str, s3_store: Callable[..., S3Store]
) -> None:
    """What a killed process leaves: an open multipart upload with a part in it."""
    client = s3_server.client()
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="forge/site/orphan")
    client.upload_part(
        Bucket=s3_bucket,
        Key="forge/site/orphan",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1000,
    )
    store = s3_store()
    # (moto reports every upload as initiated in 2010, so "too young to abort"
    # cannot be shown here; older_than=0 takes everything.)
    assert store.cleanup(older_than=0) == 1
    assert server_view(s3_server, s3_bucket) == ([], [])


def test_open_store_urls(tmp_path: Any) -> None:
    store = open_store("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:9")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (
        "bucket",
        "some/prefix/",
        "s3://bucket/some/prefix/",
    )
    store.close()
    assert isinstance(open_store(f"file://{tmp_path}"), FileStore)
    for bad in (f"s3://AKIA:{SECRET}@bucket/x", "ftp://host/x", "file://remote-host/x"):
        with pytest.raises(ValueError) as info:
            open_store(bad)
        assert SECRET not in str(info.value)


# --- real network faults (tests/lab/faultproxy.py between us and moto) ----------------


def test_dropped_connection_mid_upload_is_retried(
    s3_server: Any, s3_bucket: str, fault_proxy: Callable[..., Any]
) -> None:
    proxy = fault_proxy(s3_server.port)
    data = os.urandom(2 * PART + 5000)

    def source() -> Iterator[bytes]:
        for pos in range(0, len(data), 65536):
            if pos > PART + 65536:  # part 1 is up: cut the next connection (part 2)
                proxy.set(drop_after_bytes=2 * 1024 * 1024, drop_connections=1)
            yield data[pos : pos + 65536]

    with make_s3_store(s3_server, s3_bucket, endpoint_url=proxy.url) as store:
        assert store.put("db", source()) == len(data)
    assert proxy.stats().dropped == 1
    direct = make_s3_store(s3_server, s3_bucket)
    assert direct.read_bytes("db") == data
    assert server_view(s3_server, s3_bucket)[1] == []
    direct.close()


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 2 * PART + 5000])
def test_connection_always_dropping_fails_cleanly(
    s3_server: Any, s3_bucket: str, fault_proxy: Callable[..., Any], size: int
) -> None:
    proxy = fault_proxy(s3_server.port)
    proxy.set(drop_after_bytes=512 * 1024)  # every connection cut after 512 KiB up
    store = make_s3_store(s3_server, s3_bucket, endpoint_url=proxy.url, max_attempts=2)
    with store, pytest.raises(StoreUnreachableError) as info:
        store.put("db", [os.urandom(size)])
    assert SECRET not in str(info.value)
    assert proxy.stats().dropped >= 2
    assert server_view(s3_server, s3_bucket) == ([], [])  # no object, no open upload


def test_dropped_connection_mid_download_resumes(
    s3_server: Any, s3_bucket: str, fault_proxy: Callable[..., Any]
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with make_s3_store(s3_server, s3_bucket) as direct:
        direct.put("db", [data])
    proxy = fault_proxy(s3_server.port)
    proxy.set(drop_after_bytes_down=1024 * 1024, drop_connections=1)
    # A short read timeout also covers a connection that stalls instead of resetting.
    with make_s3_store(s3_server, s3_bucket, endpoint_url=proxy.url, read_timeout=3.0) as store:
        assert b"".join(store.get("db")) == data
    assert proxy.stats().dropped == 1


def test_put_memory_stays_at_about_one_part(s3_store: Callable[..., S3Store]) -> None:
    """35 MiB of unknown length go up while Python holds only a part or two."""
    store = s3_store()
    piece = os.urandom(1024 * 1024)
    tracemalloc.start()
    try:
        assert store.put("big", (piece for _ in range(35))) == 35 * len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * PART, f"peak {peak / 2**20:.1f} MiB"
    assert store.size("big") == 35 * len(piece)


def test_a_sealed_object_goes_up_in_one_put_signed_with_its_digest(
        s3_store: Callable[..., S3Store], s3_server: Any) -> None:
    """A segment the caller sealed whole, larger than a part, goes up as one PutObject
    (no multipart ETag) signed with the SHA-256 the caller gives (a wrong one is
    refused: test_s3client, against a store that checks it, which moto does not)."""
    import hashlib
    store = s3_store()
    pieces = [os.urandom(65_552) for _ in range(130)]  # 8.1 MiB: above a 5 MiB part
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    assert store.put_sealed("segment", pieces, digest) == sum(len(p) for p in pieces)
    assert store.read_bytes("segment") == b"".join(pieces)
    head = store._client.head_object(store.bucket, store.prefix + "segment")
    assert "-" not in head["ETag"]  # a multipart upload's ETag ends in -<parts>
    assert server_view(s3_server, store.bucket)[1] == []  # no multipart upload opened
