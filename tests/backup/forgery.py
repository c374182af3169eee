"""What an attacker who can write to the store does: seal objects and manifests with the
recipient (the public key every backup job holds), sign them with a key of their own
or not at all, and put junk under a snapshot's name. Used by the trust and restore
guard tests; the store is the site's own (file:// or moto S3)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime, timedelta

from forge_ci.backup import layout, session
from forge_ci.backup.repo import Repository
from forge_ci.backup.signing import SigningKey
from forge_ci.backup.snapshot import FileEntry, Manifest
from forge_ci.config import load
from forge_ci.store import ObjectStore

from .conftest import Site


def store(site: Site) -> ObjectStore:
    environ = site.environ()
    t = session.target(load(site.config, environ, site.environment), site.environment)
    return session.store_for(t, environ)


def reader(site: Site) -> Repository:
    """The owner's view, without any trust check: to take real manifests apart."""
    return Repository(store(site), "backup-lab", site.environment, identities=[site.identity])


def writer(site: Site, signing_key: SigningKey | None = None) -> Repository:
    """What someone holding the recipient (and maybe a signing key) writes with."""
    return Repository(store(site), "backup-lab", site.environment,
                      recipients=[site.identity.recipient], signing_key=signing_key)


def content(repo: Repository, path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    """A file entry whose content the forger stored (sealed to the recipient)."""
    key = layout.random_data_key()
    repo.put(key, [data])
    return FileEntry(path, "file", mode, 1_700_000_000_000_000_000, len(data),
                     hashlib.sha256(data).hexdigest(), (key,))


def forge(site: Site, *, paths: tuple[str, ...], files: tuple[FileEntry, ...] = (),
          signing_key: SigningKey | None = None, base: str | None = None,
          minutes: int = 5) -> str:
    """Save a manifest newer than every real one (so it is "latest"); ``base``: start
    from that real snapshot's manifest (its database and files) instead of nothing."""
    when = datetime.now(UTC) + timedelta(minutes=minutes)
    sid = layout.new_snapshot_id(when)
    if base is not None:
        real = reader(site).open_manifest(reader(site).resolve(base), trust=False).manifest
        manifest = dataclasses.replace(real, id=sid, time=when, paths=paths,
                                       files=(*real.files, *files))
    else:
        manifest = Manifest(id=sid, time=when, site="backup-lab",
                            environment=site.environment, hostnames=("evil",),
                            tool="forge-ci 0.1.0", paths=paths, files=files)
    writer(site, signing_key).save(manifest)
    return sid


def junk(site: Site, count: int = 3) -> list[str]:
    """Random bytes under future-dated snapshot names: all it takes is PUT access."""
    s = store(site)
    keys = []
    for year in range(2090, 2090 + count):
        sid = f"{year}0101T000000Z-{os.urandom(4).hex()}"
        key = layout.manifest_key("backup-lab", site.environment, sid)
        s.put(key, [os.urandom(300)])
        keys.append(key)
    return keys
