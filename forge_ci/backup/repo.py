"""A backup repository: one store, one site + environment group, and the keys at hand.

Writing needs only ``recipients`` (public keys) and, when forge.yml pins signers, the
``signing_key``; reading manifests or data needs ``identities``. Methods that need a
missing key raise :class:`SecretError` with a hint naming the variable to set.

Trust (see :mod:`forge_ci.backup.signing`): with ``signers`` pinned, a manifest is
accepted only when one of them signed it; an unsigned one only with
``allow_unsigned`` (snapshots made before signing was set up); a wrong signature
never. With no signers pinned every readable manifest is accepted - the commands
warn that snapshots are then not authenticated.

A ``verified/`` marker counts only when it names the manifest's key and the SHA-256
of the manifest's plaintext: someone who can write to the bucket but not decrypt
cannot know that hash, so cannot mark a snapshot verified.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from forge_ci.backup import layout, signing
from forge_ci.backup.errors import (
    BackupFormatError,
    SnapshotNotFound,
    UnsignedSnapshot,
    UntrustedSnapshot,
)
from forge_ci.backup.format.age import Identity, Recipient
from forge_ci.backup.format.keys import IDENTITY_ENV, RECIPIENT_ENV, X25519Identity
from forge_ci.backup.format.zstd import Mode
from forge_ci.backup.objects import seal, unseal
from forge_ci.backup.signing import SIGNING_KEY_ENV, SignerKey, SigningKey
from forge_ci.backup.snapshot import Manifest, dump_chunks, parse_pieces
from forge_ci.errors import BackupError, ForgeError, SecretError
from forge_ci.store import ObjectNotFoundError, ObjectStore

MARKER_FORMAT = "forge-ci verified"


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot as its key shows it, without decrypting anything."""

    site: str
    environment: str
    id: str

    @property
    def time(self) -> datetime:
        return layout.id_time(self.id)

    @property
    def key(self) -> str:
        return layout.manifest_key(self.site, self.environment, self.id)


@dataclass(frozen=True)
class Loaded:
    """A manifest that passed every check: readable, well-formed, and trusted."""

    ref: SnapshotRef
    manifest: Manifest
    sha256: str  # of the manifest's plaintext: what signatures and markers are bound to
    signer: SignerKey | None  # None: accepted unsigned (no signers pinned, or allowed)


_UNSIGNED_HINT = (
    "a snapshot made before backup.signers was set has no signature: pass "
    "--allow-unsigned to accept it (that skips the check that a pinned signer wrote it). "
    "If you did not make it, someone who can write to the store did: delete it")
_UNTRUSTED_HINT = (
    "restore another snapshot (forge-ci snapshots shows which are signed); if a key "
    "was rotated, keep both public keys in backup.signers while old snapshots matter")


class Repository:
    def __init__(self, store: ObjectStore, site: str, environment: str, *,
                 recipients: Sequence[Recipient] = (),
                 identities: Sequence[Identity] = (),
                 signing_key: SigningKey | None = None,
                 signers: Sequence[SignerKey] = (),
                 allow_unsigned: bool = False) -> None:
        self.store, self.site, self.environment = store, site, environment
        self._identities = list(identities)
        self.signing_key, self.signers = signing_key, tuple(signers)
        self.allow_unsigned = allow_unsigned
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

    def check_signing(self) -> None:
        """Refuse to write a snapshot nobody would accept: with signers pinned, the
        signing key must be set and be one of them."""
        self.recipients  # noqa: B018 - the public key is the first thing a backup needs
        if not self.signers:
            return
        if self.signing_key is None:
            raise SecretError(f"{SIGNING_KEY_ENV} is not set, and backup.signers is: a "
                              "snapshot without a signature would not be trusted",
                              hint="set the secret to the private key from "
                                   "`forge-ci keygen --signing`")
        if self.signing_key.public not in self.signers:
            raise SecretError(f"{SIGNING_KEY_ENV} is not one of backup.signers",
                              hint=f"its public key is {self.signing_key.public}: add it "
                                   "to backup.signers, or set the secret to a pinned key")

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

    def open_manifest(self, ref: SnapshotRef, *, trust: bool = True) -> Loaded:
        """Read, authenticate (unless ``trust`` is False: references only) and parse.

        Raises :class:`UntrustedSnapshot` (or :class:`UnsignedSnapshot`) when no pinned
        signer signed it, :class:`BackupFormatError` / :class:`SnapshotNotFound` when it
        cannot be read or is hostile."""
        # Parsed as it is read and hashed: the text (14 MiB at 50,000 files) is never
        # held whole. Nothing parsed is returned before the object is authenticated to
        # its end and its signature checked; a read error is raised as it happens, a
        # parse error only after the signature (an untrusted manifest is named so).
        hasher = hashlib.sha256()
        read_failed = False

        def pieces() -> Iterator[bytes]:
            nonlocal read_failed
            try:
                for piece in self.open(ref.key):
                    hasher.update(piece)
                    yield piece
            except ObjectNotFoundError:
                read_failed = True
                raise SnapshotNotFound(f"{self.store.url}: {ref.key} is missing") from None
            except BaseException:
                read_failed = True
                raise

        stream = pieces()
        problem: BackupFormatError | None = None
        try:
            manifest = parse_pieces(stream, expect_id=ref.id)
        except BackupFormatError as e:
            if read_failed:
                raise
            problem = e
            for _ in stream:  # the rest read, hashed and authenticated
                pass
        digest = hasher.hexdigest()
        signer = self._authenticate(ref, digest) if trust else None
        if problem is not None:
            raise problem
        if (manifest.site, manifest.environment) != (ref.site, ref.environment):
            raise BackupFormatError(f"manifest {ref.key} belongs to "
                                    f"{manifest.site}/{manifest.environment}")
        return Loaded(ref, manifest, digest, signer)

    def _authenticate(self, ref: SnapshotRef, digest: str) -> SignerKey | None:
        if not self.signers:
            return None  # nothing pinned to check against: the commands warn
        key = layout.signature_key(ref.site, ref.environment, ref.id)
        try:
            blob = self.read_small(key)
        except SnapshotNotFound:
            if self.allow_unsigned:
                return None
            raise UnsignedSnapshot(f"snapshot {ref.id} is not signed",
                                   hint=_UNSIGNED_HINT) from None
        except BackupError as e:
            raise UntrustedSnapshot(f"snapshot {ref.id}: its signature {key} cannot be "
                                    f"read ({e.message})", hint=_UNTRUSTED_HINT) from None
        result = signing.check(blob, ref.key, digest, self.signers)
        if result.signer is None:
            raise UntrustedSnapshot(f"snapshot {ref.id} is not trusted: {result.problem}",
                                    hint=_UNTRUSTED_HINT)
        return result.signer

    def load(self, ref: SnapshotRef) -> Manifest:
        return self.open_manifest(ref).manifest

    def pick(self, ref: str | None, *, warn: Callable[[str], None] = lambda _m: None
             ) -> Loaded:
        """The snapshot ``ref`` names (see :meth:`resolve`), authenticated. ``None`` or
        ``latest`` is the newest *trusted* one; newer ones that are not are named in
        ``warn`` and skipped."""
        if ref not in (None, "latest"):
            return self.open_manifest(self.resolve(ref))
        self.resolve(None)  # no snapshots at all: say so
        skipped = []
        for candidate in reversed(self.refs()):
            try:
                loaded = self.open_manifest(candidate)
            except (UntrustedSnapshot, BackupFormatError, SnapshotNotFound) as e:
                skipped.append(f"{candidate.id} ({e.message})")
                continue
            if skipped:
                warn(f"skipped newer snapshot(s) that cannot be trusted: {'; '.join(skipped)}")
            return loaded
        raise UntrustedSnapshot(
            f"no trusted snapshot of {self.site}/{self.environment}: "
            f"{'; '.join(skipped)}", hint=_UNSIGNED_HINT)

    def save(self, manifest: Manifest) -> int:
        """Write the signature (when a signing key is at hand), then the manifest: the
        one step that makes the snapshot exist."""
        key = layout.manifest_key(manifest.site, manifest.environment, manifest.id)
        # Serialised twice, a piece at a time (to hash it, then to store it), rather
        # than held whole: at 50,000 files the text alone is 14 MiB.
        if self.signing_key is not None:
            digest = hashlib.sha256()
            for piece in dump_chunks(manifest):
                digest.update(piece)
            sig = signing.sign_digest(self.signing_key, key, digest.hexdigest())
            self.store.put(layout.signature_key(manifest.site, manifest.environment,
                                                manifest.id),
                           seal([sig], self.recipients, mode="compress"))
        return self.store.put(key, seal(dump_chunks(manifest), self.recipients,
                                        mode="compress"))

    def forget(self, ref: SnapshotRef) -> None:
        self.store.delete(ref.key)
        self.store.delete(layout.signature_key(ref.site, ref.environment, ref.id))
        self.store.delete(layout.verified_key(ref.site, ref.environment, ref.id))

    def group_ids(self, top: str) -> set[str]:
        """Snapshot ids with a key under ``top`` (``signatures/``, ``verified/``) in
        this group: existence only, nothing decrypted."""
        prefix = top + layout.group_prefix(self.site, self.environment)
        found = set()
        for key in self.store.list(prefix):
            parsed = layout.parse_group_key(key, top)
            if parsed is not None:
                found.add(parsed[2])
        return found

    # -- verification markers ------------------------------------------------

    def marker_ids(self) -> set[str]:
        """Ids with a ``verified/`` object, valid or not (see :meth:`is_verified`)."""
        return self.group_ids(layout.VERIFIED)

    def is_verified(self, loaded: Loaded) -> bool:
        """A marker exists and is bound to exactly this manifest."""
        ref = loaded.ref
        try:
            doc = json.loads(self.read_small(
                layout.verified_key(ref.site, ref.environment, ref.id)))
        except (ForgeError, ValueError):
            return False
        return (isinstance(doc, dict) and doc.get("format") == MARKER_FORMAT
                and doc.get("snapshot") == ref.key
                and doc.get("manifest_sha256") == loaded.sha256)

    def mark_verified(self, loaded: Loaded, report: dict[str, object]) -> None:
        ref = loaded.ref
        body = json.dumps({**report, "format": MARKER_FORMAT, "snapshot": ref.key,
                           "manifest_sha256": loaded.sha256,
                           "verified_at": datetime.now(UTC).isoformat()},
                          sort_keys=True).encode()
        key = layout.verified_key(ref.site, ref.environment, ref.id)
        self.store.put(key, seal([body], self.recipients, mode="compress"))

    def clear_verified(self, ref: SnapshotRef) -> None:
        self.store.delete(layout.verified_key(ref.site, ref.environment, ref.id))

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
