"""The per-file manifest of a build: what a release contains, file by file.

A manifest is plain data: for each path (relative, POSIX, sorted) its type, mode,
and for files size and sha256, for symlinks the target. Deploy compares the new
manifest with the live release's to send only what changed. Reading a manifest
rejects anything that could escape the release directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forge_ci.errors import ArtifactError

# A str as json.dumps writes it (ASCII, escaped): the C encoder's own function.
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii

Kind = Literal["file", "dir", "symlink"]
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Anything normpath would change, or that climbs out: empty, "." and ".." parts,
# "//", a leading or trailing "/", NUL.
_BAD_PATH = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|^/|/$|\x00")


@dataclass(frozen=True)
class Entry:
    kind: Kind
    mode: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # symlinks only

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, "mode": self.mode}
        if self.kind == "file":
            d.update(size=self.size, sha256=self.sha256)
        elif self.kind == "symlink":
            d["target"] = self.target
        return d


@dataclass(frozen=True)
class Manifest:
    entries: Mapping[str, Entry]

    def to_bytes(self) -> bytes:
        return self._bytes

    @functools.cached_property
    def _bytes(self) -> bytes:
        # Made once: a deploy needs them for the digest and again to store the manifest.
        # The same bytes as json.dumps({"version": 1, "files": {p: e.to_json()}},
        # sort_keys=True, separators=(",", ":")), written entry by entry: about five
        # times faster, and in Python code, so a thread making them (while the lock's
        # round trip is under way) lets the others run.
        q = _json_string
        out = []
        for path, e in sorted(self.entries.items()):
            if e.kind == "file":
                out.append(f'{q(path)}:{{"mode":{int(e.mode)},"sha256":{q(e.sha256)},'
                           f'"size":{int(e.size)},"type":"file"}}')
            elif e.kind == "symlink":
                out.append(f'{q(path)}:{{"mode":{int(e.mode)},"target":{q(e.target)},'
                           '"type":"symlink"}')
            else:
                out.append(f'{q(path)}:{{"mode":{int(e.mode)},"type":{q(e.kind)}}}')
        return f'{{"files":{{{",".join(out)}}},"version":1}}'.encode()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries.values())

    @functools.cached_property
    def _entry_bytes(self) -> Mapping[bytes, str] | None:
        """Each entry's bytes in :meth:`to_bytes` (see :func:`_entry_parts`) -> its
        path; None for an empty manifest."""
        parts = _entry_parts(self.to_bytes())
        paths = sorted(self.entries)  # the order to_bytes writes them in
        if parts is None or len(parts) != len(paths):
            return None
        return dict(zip(parts, paths, strict=True))

    def prepare_reading(self) -> None:
        """Make now what :meth:`from_bytes` with this manifest as ``known`` needs (for
        a caller with time to spare while it waits for the bytes to read)."""
        _ = self._entry_bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "manifest",
                   known: Manifest | None = None) -> Manifest:
        """Parse and check a manifest. ``known``: one already checked (the artifact's,
        when reading the live release's, which mostly repeats it): an entry equal to
        its entry at the same path is taken from it instead of being checked again.
        Where both are as :meth:`to_bytes` writes them, entries with the same bytes
        are matched without parsing them; only the others are parsed."""
        same: Mapping[str, Entry] = known.entries if known is not None else {}
        try:
            quick = cls._read_against(data, known, source) if known is not None else None
            entries = quick if quick is not None else cls._parse(data, same, source)
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{source} is not a valid forge manifest: {e}",
                                hint="rebuild the artifact with forge-ci build") from None
        for path, entry in entries.items():
            if entry.kind == "symlink":
                check_link(path, entry.target, source)
        check_link_chains(entries, source)
        return cls(entries)

    @staticmethod
    def _read_against(data: bytes, known: Manifest, source: str) -> dict[str, Entry] | None:
        """``data``'s entries where it is laid out as :meth:`to_bytes` writes: the
        entries whose bytes ``known`` has too are its; the rest are parsed and checked
        together. None when ``data`` is laid out otherwise."""
        index, parts = known._entry_bytes, _entry_parts(data)
        if index is None or parts is None:
            return None
        entries: dict[str, Entry] = {}
        fresh: list[bytes] = []
        for part in parts:
            path = index.get(part)
            if path is None:
                fresh.append(part)
            else:
                entries[path] = known.entries[path]
        if fresh:
            # The parts differ only where they were cut: put the cuts back.
            doc = _PREFIX + _SEP.join(fresh) + _SUFFIX
            entries.update(Manifest._parse(doc, {}, source))
        return entries

    @staticmethod
    def _parse(data: bytes, same: Mapping[str, Entry], source: str) -> dict[str, Entry]:
        """The entries of the JSON ``data``, each checked unless equal to ``same``'s."""
        raw = json.loads(data)
        files = raw["files"]
        if raw.get("version") != 1 or not isinstance(files, dict):
            raise ValueError("unknown manifest version")
        entries = {}
        for p, e in files.items():
            k = same.get(p)
            if k is not None and e == k.to_json():
                entries[p] = k
            else:
                entries[check_path(p, source)] = _entry(e)
        return entries


# How to_bytes lays a manifest out: _PREFIX, then each entry as `path":{...` with the
# entries' `},"` between them (it cannot occur inside a JSON string, where `"` is
# escaped, nor inside an entry), then _SUFFIX.
_PREFIX = b'{"files":{"'
_SEP = b'},"'
_SUFFIX = b'}},"version":1}'


def _entry_parts(data: bytes) -> list[bytes] | None:
    """The entries of a manifest laid out as to_bytes writes, each as its bytes
    without the cuts; None when ``data`` is not laid out so (or has no entries)."""
    if not (data.startswith(_PREFIX) and data.endswith(_SUFFIX)) or len(data) < len(
            _PREFIX) + len(_SUFFIX):
        return None
    return data[len(_PREFIX):-len(_SUFFIX)].split(_SEP)


def _entry(e: Mapping[str, Any]) -> Entry:
    kind = e["type"]
    if kind not in ("file", "dir", "symlink"):
        raise ValueError(f"unsupported entry type {kind!r} (only files, dirs and symlinks)")
    mode = int(e["mode"])
    if mode & ~0o777:
        raise ValueError("modes may only carry permission bits (no setuid, setgid, sticky)")
    if kind == "file":
        sha = str(e["sha256"])
        if not _SHA256.fullmatch(sha):
            raise ValueError("bad sha256")
        return Entry("file", mode, int(e["size"]), sha)
    if kind == "symlink":
        return Entry("symlink", 0o777, target=str(e["target"]))
    return Entry("dir", mode)


def check_path(path: str, source: str) -> str:
    """A release-relative path: no absolute paths, no ``..``, nothing odd."""
    # The pattern only where a part may start with "."; the rest by plain str tests
    # (a deploy checks every path of the artifact's manifest).
    if (not path or path[0] == "/" or path[-1] == "/" or "//" in path or "\x00" in path
            or ((path[0] == "." or "/." in path) and _BAD_PATH.search(path))):
        raise ArtifactError(f"{source} names a path outside the release: {path!r}",
                            hint="the artifact may be corrupt or hostile; rebuild it")
    check_name(path, source)
    return path


def check_name(rel: str, source: str) -> None:
    """Refuse a file name that is not UTF-8 (``rel`` as os functions return it).

    Such a name cannot be written into the manifest, listed for the server or
    served at any URL a browser sends (browsers send UTF-8), so the build says
    which file it is instead of a deploy failing half-way.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        raise ArtifactError(f"{source}: the name '{shown}' is not valid UTF-8",
                            hint="rename it to a UTF-8 name (e.g. convmv -f latin1 -t utf8 "
                                 "--notest), or exclude it with build.exclude") from None


def check_link(path: str, target: str, source: str) -> None:
    """Symlinks must point inside the release (relative, not climbing out)."""
    check_name(target, f"{source}: the target of symlink {path!r}")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../") or not target:
        raise ArtifactError(f"{source}: symlink {path!r} points outside the release "
                            f"({target!r})", hint="make the link relative and inside the site")


# As the kernel's limit on symlinks followed in one lookup (ELOOP).
_MAX_HOPS = 40


def check_link_chains(entries: Mapping[str, Entry], source: str) -> None:
    """Every symlink resolves inside the release when followed through the tree's other
    symlinks: ``x1/l -> ..`` is inside, but ``x2/l -> ../x1/l/..`` then climbs out,
    though each target alone looks harmless. Loops are refused too."""
    for path, entry in entries.items():
        if entry.kind == "symlink" and _escapes(entries, path):
            raise ArtifactError(f"{source}: symlink {path!r} ({entry.target!r}) resolves "
                                "outside the release through other symlinks",
                                hint="make the link point inside the site without chains "
                                     "through other links")


def _escapes(entries: Mapping[str, Entry], link: str) -> bool:
    parts: list[str] = link.split("/")[:-1]  # the link's directory, as real components
    todo = list(reversed(entries[link].target.split("/")))
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return True
            parts.pop()
            continue
        found = entries.get("/".join([*parts, part]))
        if found is not None and found.kind == "symlink":
            hops += 1
            if hops > _MAX_HOPS or found.target.startswith("/"):
                return True
            todo.extend(reversed(found.target.split("/")))  # relative to the same dir
            continue
        parts.append(part)
    return False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def scan(root: Path) -> Manifest:
    """Describe the tree under ``root``; refuses devices, sockets and escaping links."""
    entries: dict[str, Entry] = {}
    for rel, st in _walk(root):
        check_name(rel, str(root))
        full = root / rel
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            check_name(target, f"{root}: the target of symlink {rel!r}")
            check_link(rel, target, str(root))
            entries[rel] = Entry("symlink", 0o777, target=target)
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = Entry("dir", stat.S_IMODE(st.st_mode) & 0o777)
        elif stat.S_ISREG(st.st_mode):
            entries[rel] = Entry("file", stat.S_IMODE(st.st_mode) & 0o777, st.st_size,
                                 file_sha256(full))
        else:
            raise ArtifactError(f"{full} is not a file, directory or symlink",
                                hint="remove device files, sockets and FIFOs from the build")
    check_link_chains(entries, str(root))
    return Manifest(entries)


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for de in it:
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                st = de.stat(follow_symlinks=False)
                yield rel, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel)


@dataclass(frozen=True)
class Diff:
    """What turns the old tree into the new one."""

    send: tuple[str, ...]  # entries to transfer (new or changed), parents first
    remove: tuple[str, ...]  # paths to delete from a hard-linked copy of the old tree


def diff(old: Manifest | None, new: Manifest) -> Diff:
    """Entries to send and to remove, when the new release starts as a copy of ``old``."""
    if old is None:
        return Diff(send=tuple(sorted(new.entries)), remove=())
    send, remove = [], []
    for path, entry in new.entries.items():
        prev = old.entries.get(path)
        if prev != entry:
            send.append(path)
            if prev is not None and (prev.kind != "dir" or entry.kind != "dir"):
                remove.append(path)  # replaced files are unlinked, never rewritten in place
    for path in old.entries:
        if path not in new.entries:
            remove.append(path)
    # Drop removals inside already-removed directories; rm -rf covers them.
    removed_dirs = {p for p in remove if old.entries[p].kind == "dir"}
    remove = [p for p in remove if not any(p.startswith(d + "/") for d in removed_dirs)]
    return Diff(send=tuple(sorted(send)), remove=tuple(sorted(remove)))
