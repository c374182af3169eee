"""A real S3 endpoint on loopback: moto's standalone server.

One per test session; tests keep apart by using their own bucket
(`create_bucket` makes a unique one). Any credentials are accepted; the ones
here exist so code under test finds the variables it expects, and the secret
key is random and registered, so the suite's leak check sees it anywhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config

from . import leaks
from ._proc import LabUnavailable, lab_root, on_free_port, spawn, terminate, wait_or_stop

_START_TIMEOUT = 30.0
# One per test run, never in the source: a copy of the repository is no leak.
SECRET_ACCESS_KEY = f"forge-lab-secret-{secrets.token_urlsafe(18)}"
leaks.register(SECRET_ACCESS_KEY)


@dataclass
class S3Server:
    endpoint_url: str
    port: int
    workdir: Path
    access_key_id: str = "forge-lab-access-key"
    secret_access_key: str = field(default=SECRET_ACCESS_KEY, repr=False)
    region: str = "us-east-1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "moto.log"

    def env(self, endpoint_url: str | None = None) -> dict[str, str]:
        """The standard AWS variables pointing at this server (or at `endpoint_url`,
        e.g. a fault proxy in front of it)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": endpoint_url or self.endpoint_url,
        }

    def client(self, endpoint_url: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server; `config` goes to botocore's Config."""
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(**config) if config else None,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name unless given) and return its name."""
        bucket = name or f"forge-lab-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_s3(*, spool_bytes: int | None = None) -> S3Server:
    """Start moto_server from this interpreter's environment on a free port.

    moto keeps an object in memory up to a buffer size (about 5 MiB by default) and
    spools larger ones to a temporary file; ``spool_bytes`` lowers that size, so a
    store of many GiB lives on disk instead of in moto's memory (benchmarks at 10 GiB).
    """
    try:
        import moto.server  # noqa: F401  (only to fail early with a clear message)
    except ImportError as exc:
        raise LabUnavailable(
            "moto[server] is not installed: pip install -r requirements/dev.lock"
        ) from exc
    workdir = lab_root()
    env = None
    if spool_bytes is not None:
        env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(spool_bytes)}
    return on_free_port(lambda port: _launch(workdir, port, env))


def _launch(workdir: Path, port: int, env: dict[str, str] | None = None) -> S3Server:
    server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", port=port, workdir=workdir)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server._proc = spawn(argv, server.log_path, env=env)
    wait_or_stop(
        lambda: _answers(server.endpoint_url),
        server.stop,
        what=f"moto S3 server on port {port}",
        timeout=_START_TIMEOUT,
        log=server.log_path,
        proc=server._proc,
    )
    return server


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/moto-api/", timeout=1)
    except requests.RequestException:
        return False
    return True
