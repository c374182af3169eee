"""Backup and restore byte for byte: real MariaDB, real sshd, moto S3, reference age/zstd."""

from __future__ import annotations

import hashlib
import json
import shutil

import boto3
import pytest

from forge_ci.backup.layout import is_data_key
from forge_ci.backup.pack import SEGMENT

from .conftest import Site, db_state, reference_decrypt, tree_state


def _s3(site: Site) -> tuple[object, str, str]:
    environ = site.base_environ
    client = boto3.client("s3", endpoint_url=environ["AWS_ENDPOINT_URL"],
                          aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
                          region_name=environ["AWS_DEFAULT_REGION"])
    store = site.config.read_text().split("store: ")[1].split()[0]
    bucket, prefix = store.removeprefix("s3://").split("/", 1)
    return client, bucket, prefix + "/"


def _objects(site: Site) -> dict[str, bytes]:
    client, bucket, prefix = _s3(site)
    pages = client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
        Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read()  # type: ignore[attr-defined]
            for k in keys}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip_over_ssh_to_s3(make_site, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site: Site = make_site(store="s3", ssh=True, big=SEGMENT + 500_000)
    files_before = tree_state(site.uploads)
    db_before = db_state(site.server, site.db.name)

    first = site.json(capsys, "backup", "production", read=False)
    sid = first["snapshot_id"]
    # Every non-empty file is read once (33; dup-2.txt turns out to repeat dup-1.txt):
    # the big one in two segments, the small ones in one pack, and the dump.
    assert first["files"] == 34 and first["upload_files"] == 33 and first["new_objects"] == 4
    assert f"snapshot-id={sid}" in site.outputs.read_text()
    assert "new bytes stored" in site.summary.read_text()

    # Every stored object opens with the reference tools alone.
    stored = _objects(site)
    plain = {k: reference_decrypt(site.identity_file, v) for k, v in stored.items()
             if not k.startswith("locks/")}
    manifest = json.loads(plain[f"snapshots/backup-lab/production/{sid}"])
    assert manifest["id"] == sid and manifest["database"]["name"] == site.db.name
    dump = plain[manifest["database"]["object"]]
    assert dump.rstrip().splitlines()[-1].startswith(b"-- Dump completed")
    assert _sha(dump) == manifest["database"]["sha256"]
    for entry in manifest["files"]:
        if entry["type"] == "file" and entry["objects"]:
            start = entry.get("offset", 0)  # packed; else segments, concatenated
            whole = b"".join(plain[k] for k in entry["objects"])
            content = whole[start:start + entry["size"]]
            assert _sha(content) == entry["sha256"]
    assert all(is_data_key(k) for k in stored if k.startswith("data/"))
    # Object names reveal no file name or content hash.
    names = " ".join(stored)
    assert "jpg" not in names and "uploads" not in names
    assert not [e for e in manifest["files"] if e["type"] == "file" and e["sha256"] in names]

    # A second backup after adding one file sends only that file (in a pack of its
    # own, with an index entry for it) and the new dump.
    new = site.uploads / "2024" / "01" / "new upload.jpg"
    new.write_bytes(b"\xff\xd8 fresh image")
    shutil.chown(new, site.owner, site.owner)  # only this one: chown changes ctime
    data_before = {k for k in stored if k.startswith("data/")}
    second = site.json(capsys, "backup", "production", read=False)
    assert (second["upload_files"], second["new_objects"], second["hashed"]) == (1, 2, 1)
    data_after = {k for k in _objects(site) if k.startswith("data/")}
    assert len(data_after - data_before) == 2 and data_before <= data_after
    new.unlink()

    # Lose everything, then restore the first snapshot over the live site.
    site.server.sql(f"DROP DATABASE `{site.db.name}`; CREATE DATABASE `{site.db.name}`;")
    shutil.rmtree(site.uploads)
    assert site.run("restore", "production", "--snapshot", sid) == 2  # no --yes: refused
    assert not site.uploads.exists()
    assert site.run("verify", "production", "--snapshot", sid) == 0
    assert site.run("restore", "production", "--snapshot", sid, "--yes") == 0
    assert db_state(site.server, site.db.name) == db_before
    assert tree_state(site.uploads) == files_before

    # A drill restores next to the live data, into another database and directory.
    drill_db = site.db.name + "_drill"
    site.server.sql(f"CREATE DATABASE `{drill_db}`; "
                    f"GRANT ALL ON `{drill_db}`.* TO '{site.db.user}'@'%';")
    drill_dir = site.root.parent / "drill"
    drill_dir.mkdir()
    site.chown()
    shutil.chown(drill_dir, site.owner, site.owner)
    assert site.run("restore", "production", "--snapshot", sid, "--database", drill_db, "--to-dir",
                    str(drill_dir)) == 0
    assert db_state(site.server, drill_db).replace(drill_db, site.db.name) == db_before
    assert tree_state(drill_dir / "shared" / "web" / "app" / "uploads") == files_before
    site.server.sql(f"DROP DATABASE `{drill_db}`;")
