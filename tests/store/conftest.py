"""Stores for the contract suite: memory, file:// and s3:// on the lab's moto server.

The S3 server comes from tests/conftest.py (`s3_server`, a real moto process on
127.0.0.1); every test gets its own bucket.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forge_ci.store.base import ObjectStore
from forge_ci.store.file import FileStore
from forge_ci.store.memory import MemoryStore
from forge_ci.store.s3 import MIN_PART_SIZE, S3Store

PART = MIN_PART_SIZE  # moto, like S3, refuses smaller non-final parts


def make_s3_store(
    server: Any, bucket: str, endpoint_url: str | None = None, **opts: Any
) -> S3Store:
    """An S3Store on the lab server (or on a proxy in front of it)."""
    settings: dict[str, Any] = {
        "part_size": PART,
        "max_attempts": 3,
        "connect_timeout": 5.0,
        "read_timeout": 20.0,
    }
    settings.update(opts)
    return S3Store(
        bucket,
        "forge/site",
        endpoint_url=endpoint_url or server.endpoint_url,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        region=server.region,
        **settings,
    )


def leftovers(store: ObjectStore) -> list[str]:
    """What an abandoned put may have left behind: temp files, open multipart uploads."""
    if isinstance(store, FileStore):
        return [
            name for _, _, files in os.walk(store.root) for name in files if name.startswith(".")
        ]
    if isinstance(store, S3Store):
        return [u["Key"] for u in store.incomplete_uploads()]
    return []


@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.lab)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "file":
        yield FileStore(tmp_path / "store")
    else:
        server = request.getfixturevalue("s3_server")
        with make_s3_store(server, server.create_bucket()) as s3:
            yield s3


@pytest.fixture
def s3_store(s3_server: Any, s3_bucket: str) -> Iterator[Callable[..., S3Store]]:
    """Factory for S3 stores on this test's bucket, closed at the end."""
    made: list[S3Store] = []

    def make(**opts: Any) -> S3Store:
        made.append(make_s3_store(s3_server, s3_bucket, **opts))
        return made[-1]

    yield make
    for one in made:
        one.close()
