"""The lab's S3 endpoint (moto server), directly and through the fault proxy."""

from __future__ import annotations

import time
from collections.abc import Callable

import botocore.exceptions
import pytest
from lab.faultproxy import FaultProxy
from lab.s3 import S3Server


def test_put_get_list(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"payload")
    assert s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"payload"
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/")
    assert [item["Key"] for item in listed["Contents"]] == ["a/b.txt"]
    assert s3_server.env()["AWS_ENDPOINT_URL"] == s3_server.endpoint_url


def test_through_proxy(
    s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(s3_server.port)
    s3 = s3_server.client(proxy.url)
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"x" * 10_000)
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"x" * 10_000
    stats = proxy.stats()
    assert stats.accepted >= 1 and stats.bytes_up > 10_000 and stats.bytes_down > 10_000


def test_dropped_upload_is_retried(
    s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(s3_server.port)
    s3 = s3_server.client(proxy.url, retries={"max_attempts": 3, "mode": "standard"})
    proxy.set(drop_after_bytes=2_000, drop_connections=1)
    s3.put_object(Bucket=s3_bucket, Key="retried", Body=b"y" * 200_000)
    assert proxy.stats().dropped == 1
    assert (
        s3_server.client().head_object(Bucket=s3_bucket, Key="retried")["ContentLength"] == 200_000
    )


def test_refused_connections_surface(
    s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(s3_server.port)
    s3 = s3_server.client(proxy.url, retries={"max_attempts": 1, "mode": "standard"})
    proxy.set(refuse=True)
    with pytest.raises(
        (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError)
    ):
        s3.head_bucket(Bucket=s3_bucket)
    assert proxy.stats().refused >= 1
    proxy.clear()
    s3.head_bucket(Bucket=s3_bucket)


def test_delay_slows_requests(
    s3_server: S3Server, s3_bucket: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(s3_server.port)
    s3 = s3_server.client(proxy.url)
    s3.head_bucket(Bucket=s3_bucket)  # warm the connection pool
    proxy.kill_connections()
    proxy.set(delay=0.3)
    started = time.monotonic()
    s3.head_bucket(Bucket=s3_bucket)
    assert time.monotonic() - started >= 0.6  # one chunk each way
