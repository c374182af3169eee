"""A backup repository: one store, one site + environment group, and the keys at hand.

Writing needs only ``recipients`` (public keys); reading manifests or data needs
``identities``. Methods that need the missing half raise :class:`SecretError` with
a hint naming the variable to set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from forge_ci.backup import layout
from forge_ci.backup.errors import BackupFormatError, SnapshotNotFound
from forge_ci.backup.format.age import Identity, Recipient
from forge_ci.backup.format.keys import IDENTITY_ENV, RECIPIENT_ENV, X25519Identity
from forge_ci.backup.format.zstd import Mode
from forge_ci.backup.objects import seal, unseal
from forge_ci.backup.snapshot import Manifest, dumps, parse
from forge_ci.errors import SecretError
from forge_ci.store import ObjectNotFoundError, ObjectStore


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot as its key shows it, without decrypting anything."""

    site: str
    environment: str
    id: str

    @property
    def time(self) -> datetime:
        return layout.id_time(self.id)


class Repository:
    def __init__(self, store: ObjectStore, site: str, environment: str, *,
                 recipients: Sequence[Recipient] = (),
                 identities: Sequence[Identity] = ()) -> None:
        self.store, self.site, self.environment = store, site, environment
        self._identities = list(identities)
        if not recipients:
            # Reading jobs (verify, prune) write small objects too: markers, locks.
            recipients = [i.recipient for i in identities if isinstance(i, X25519Identity)]
        self._recipients = list(recipients)

    # -- keys ----------------------------------------------------------------

    @property
    def recipients(self) -> list[Recipient]:
        if not self._recipients:
            raise SecretError(f"{RECIPIENT_ENV} is not set",
                              hint="writing backups needs the public key from `forge-ci keygen`")
        return self._recipients

    @property
    def identities(self) -> list[Identity]:
        if not self._identities:
            raise SecretError(f"{IDENTITY_ENV} is not set",
                              hint="reading snapshots (restore, verify, prune) needs the "
                                   "private key from `forge-ci keygen`")
        return self._identities

    @property
    def can_read(self) -> bool:
        return bool(self._identities)

    def naming_key(self) -> bytes:
        return layout.naming_key(self.recipients)

    # -- snapshots -----------------------------------------------------------

    def refs(self, *, all_groups: bool = False) -> list[SnapshotRef]:
        """Snapshots (oldest first) of this group, or of every group in the store."""
        prefix = layout.SNAPSHOTS + ("" if all_groups else
                                     layout.group_prefix(self.site, self.environment))
        out = []
        for key in self.store.list(prefix):
            parsed = layout.parse_group_key(key, layout.SNAPSHOTS)
            if parsed is not None:
                out.append(SnapshotRef(*parsed))
        return sorted(out, key=lambda r: (r.id, r.site, r.environment))

    def resolve(self, ref: str | None) -> SnapshotRef:
        """``None``/``latest``, a full id, or a unique prefix of one (or of its random tail)."""
        refs = self.refs()
        if not refs:
            raise SnapshotNotFound(
                f"{self.store.url}: no snapshots of {self.site}/{self.environment}",
                hint=f"run `forge-ci backup {self.environment}` first")
        if ref in (None, "latest"):
            return refs[-1]
        assert ref is not None
        hits = [r for r in refs if r.id.startswith(ref) or r.id.split("-")[1].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise SnapshotNotFound(f"no snapshot {ref!r} of {self.site}/{self.environment}",
                                   hint=f"list them with `forge-ci snapshots {self.environment}`")
        raise SnapshotNotFound(f"{ref!r} matches {len(hits)} snapshots",
                               hint="give more of the id")

    def load(self, ref: SnapshotRef) -> Manifest:
        key = layout.manifest_key(ref.site, ref.environment, ref.id)
        manifest = parse(self.read_small(key), expect_id=ref.id)
        if (manifest.site, manifest.environment) != (ref.site, ref.environment):
            raise BackupFormatError(f"manifest {key} belongs to "
                                    f"{manifest.site}/{manifest.environment}")
        return manifest

    def save(self, manifest: Manifest) -> int:
        """Write the manifest: the one step that makes the snapshot exist."""
        key = layout.manifest_key(manifest.site, manifest.environment, manifest.id)
        return self.store.put(key, seal([dumps(manifest)], self.recipients, mode="compress"))

    def forget(self, ref: SnapshotRef) -> None:
        self.store.delete(layout.manifest_key(ref.site, ref.environment, ref.id))
        self.store.delete(layout.verified_key(ref.site, ref.environment, ref.id))

    # -- verification markers ------------------------------------------------

    def verified_ids(self) -> set[str]:
        prefix = layout.VERIFIED + layout.group_prefix(self.site, self.environment)
        found = set()
        for key in self.store.list(prefix):
            parsed = layout.parse_group_key(key, layout.VERIFIED)
            if parsed is not None:
                found.add(parsed[2])
        return found

    def mark_verified(self, ref: SnapshotRef, report: dict[str, object]) -> None:
        body = json.dumps({"snapshot": ref.id, "verified_at": datetime.now(UTC).isoformat(),
                           **report}, sort_keys=True).encode()
        key = layout.verified_key(ref.site, ref.environment, ref.id)
        self.store.put(key, seal([body], self.recipients, mode="compress"))

    # -- objects -------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes], *, name: str | None = None,
            mode: Mode = "auto") -> int:
        """Seal and store a stream; returns the stored (encrypted) size."""
        return self.store.put(key, seal(chunks, self.recipients, name=name, mode=mode))

    def open(self, key: str) -> Iterator[bytes]:
        """Plaintext of an object, lazily; see :func:`forge_ci.backup.objects.unseal`."""
        return unseal(self.store.get(key), self.identities)

    def read_small(self, key: str) -> bytes:
        """Whole plaintext of a small object, returned only once fully authenticated."""
        try:
            return b"".join(self.open(key))
        except ObjectNotFoundError:
            raise SnapshotNotFound(f"{self.store.url}: {key} is missing") from None

    def data_keys(self) -> set[str]:
        """Every data object in the store: the dedup index is the listing itself."""
        return {k for k in self.store.list(layout.DATA) if layout.is_data_key(k)}
