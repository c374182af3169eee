"""S3 Object Lock: every object carries a retention; prune only hides locked versions."""

from __future__ import annotations

import secrets

import pytest
from lab.s3 import S3Server

from .conftest import Site


def test_object_lock_retention_survives_prune(make_site, s3_server: S3Server,  # type: ignore[no-untyped-def]
                                              capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="s3", retention="{ keep_last: 1 }", big=10_000)
    client = s3_server.client()
    bucket = f"forge-lock-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    text = site.config.read_text()
    old_store = text.split("store: ")[1].split()[0]
    site.config.write_text(
        text.replace(old_store, f"s3://{bucket}/locked")
        .replace("      retention:", "      object_lock: { mode: governance, days: 2 }\n"
                                     "      retention:"))

    first = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("locked/") for k in keys)
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        assert head["ObjectLockRetainUntilDate"]

    (site.uploads / "second.txt").write_text("second\n")
    site.json(capsys, "backup", "production", read=False)
    plan = site.json(capsys, "prune", "production")
    assert plan["forget"] == [first] and plan["delete_objects"] == 1  # the first dump
    # Deleted from the listing, but the locked versions are still there.
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    versions = client.list_object_versions(Bucket=bucket)
    kept = {v["Key"] for v in versions.get("Versions", [])}
    markers = {m["Key"] for m in versions.get("DeleteMarkers", [])}
    gone = set(keys) - listed
    assert gone and gone <= kept and gone <= markers
    assert site.run("verify", "production") == 0
