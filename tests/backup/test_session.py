"""Stores are built from forge.yml and the command's environ mapping, never os.environ."""

from __future__ import annotations

import pytest

from forge_ci.backup.session import s3_options
from forge_ci.config.backup import BackupConfig, ObjectLock
from forge_ci.store import open_store
from forge_ci.store.credentials import WebIdentity


def test_s3_settings_come_from_the_environ_mapping() -> None:
    environ = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
               "AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_DEFAULT_REGION": "eu-west-3",
               "AWS_SESSION_TOKEN": "", "UNRELATED": "x"}
    config = BackupConfig(store="s3://bucket/site",
                          object_lock=ObjectLock(mode="compliance", days=30))
    assert s3_options(config, environ) == {
        "endpoint_url": "http://127.0.0.1:9", "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "not-a-real-secret", "region": "eu-west-3",
        "retention_mode": "COMPLIANCE", "retention_days": 30}
    # AWS_REGION wins over AWS_DEFAULT_REGION, as in the AWS tools.
    assert s3_options(config, {"AWS_REGION": "ca-central-1", "AWS_DEFAULT_REGION": "x"})[
        "region"] == "ca-central-1"


def test_s3_store_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = open_store("s3://bucket/site")  # no I/O until used
    try:
        assert store.endpoint == "AWS S3"  # type: ignore[attr-defined]
        assert store._client.meta.region_name == "us-east-1"  # type: ignore[attr-defined]
    finally:
        store.close()


def test_web_identity_comes_from_the_environ_mapping() -> None:
    """The OIDC action's token file and role: exchanged at STS by the store itself,
    at the same endpoint override as S3 unless STS has its own."""
    config = BackupConfig(store="s3://bucket/site")
    environ = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/tmp/token", "AWS_ROLE_SESSION_NAME": "forge-7-1",
               "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/forge-backup",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    assert s3_options(config, environ)["web_identity"] == WebIdentity(
        "/tmp/token", "arn:aws:iam::123456789012:role/forge-backup", "forge-7-1",
        "http://127.0.0.1:9")
    sts = s3_options(config, {**environ, "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:8"})
    assert sts["web_identity"].sts_endpoint == "http://127.0.0.1:8"
    # Static keys win; without a role there is nothing to assume.
    keyed = {**environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}
    assert "web_identity" not in s3_options(config, keyed)
    assert "web_identity" not in s3_options(config, {"AWS_WEB_IDENTITY_TOKEN_FILE": "/tmp/t"})
