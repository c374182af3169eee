"""Files of a pack restore byte for byte, from memory or streamed.

A pack that fits restore's pack buffer is decrypted whole into it (authenticated to
its end) and its members written as views of it (restore._unpack); one that does
not fit - or whose content would grow past the buffer - is streamed as before.
Both must give the same bytes and refuse the same damage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from forge_ci.backup.errors import BackupError, BackupFormatError
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.localtree import NewTree
from forge_ci.backup.objects import Mode, seal
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import _Prefetch
from forge_ci.backup.snapshot import FileEntry, FileTable
from forge_ci.store.memory import MemoryStore

TEXT = b"<?php echo 'hello, world'; // a template line\n"


def _contents() -> list[bytes]:
    # Incompressible and compressible members, one empty-free tiny one, a repeat.
    out = [os.urandom(n) for n in (1, 5_000, 40_000, 131_073)]
    out += [TEXT * 900, os.urandom(70_000)]
    return out


def _repo_with(packs: list[list[bytes]], *, mode: Mode = "store",
               damage: bool = False) -> tuple[Repository, list[FileEntry]]:
    identity = generate_identity()
    store = MemoryStore()
    entries = []
    for p, members in enumerate(packs):
        key = f"data/{p:02x}/{os.urandom(32).hex()}"
        sealed = b"".join(seal([b"".join(members)], [identity.recipient], mode=mode))
        if damage:
            sealed = sealed[:-40] + bytes([sealed[-40] ^ 1]) + sealed[-39:]
        store.put(key, [sealed])
        offset = 0
        for i, data in enumerate(members):
            entries.append(FileEntry(f"uploads/p{p}/f{i}.bin", "file", 0o640,
                                     1_700_000_000_123_456_789 + i, size=len(data),
                                     sha256=hashlib.sha256(data).hexdigest(),
                                     objects=(key,), offset=offset))
            offset += len(data)
    repo = Repository(store, "s", "e", recipients=[identity.recipient], identities=[identity])
    return repo, entries


def _restore(repo: Repository, entries: list[FileEntry], dest: Path, *,
             pack_bytes: int | None = None, local: bool = True) -> dict[str, bytes]:
    tree = NewTree(str(dest))
    extra = {} if pack_bytes is None else {"pack_bytes": pack_bytes}
    with _Prefetch(repo, FileTable.of(entries), range(len(entries)),
                   write=tree.write_file if local else None,
                   **extra) as prefetch:
        for f in entries:
            content = prefetch.content(f)
            if local:
                for _ in content:
                    pass
            else:
                tree.write_file(f, content)
    return {f.path: (dest / f.path).read_bytes() for f in entries}


@pytest.mark.parametrize("mode", ["store", "compress"])
@pytest.mark.parametrize("local", [True, False])
def test_packed_files_restore_exactly(tmp_path: Path, mode: Mode, local: bool) -> None:
    packs = [_contents(), _contents()[::-1]]
    repo, entries = _repo_with(packs, mode=mode)
    got = _restore(repo, entries, tmp_path / "out", local=local)
    assert got == {f.path: d for f, d in zip(entries, [*packs[0], *packs[1]], strict=True)}
    assert os.stat(tmp_path / "out" / entries[2].path).st_mtime_ns == entries[2].mtime_ns


def test_two_files_of_the_same_content_in_one_pack(tmp_path: Path) -> None:
    data = os.urandom(9_000)
    repo, entries = _repo_with([[data]])
    twin = FileEntry("uploads/twin.bin", "file", 0o600, 0, size=len(data),
                     sha256=entries[0].sha256, objects=entries[0].objects, offset=0)
    got = _restore(repo, [*entries, twin], tmp_path / "out")
    assert got == {entries[0].path: data, twin.path: data}


@pytest.mark.parametrize("mode", ["store", "compress"])
def test_a_pack_bigger_than_the_buffer_is_streamed(tmp_path: Path, mode: Mode) -> None:
    packs = [_contents()]
    repo, entries = _repo_with(packs, mode=mode)
    # 64 KiB: smaller than the pack (and than its compressible content grown back).
    got = _restore(repo, entries, tmp_path / "out", pack_bytes=64 * 1024)
    assert list(got.values()) == packs[0]


def test_content_growing_past_the_buffer_is_streamed(tmp_path: Path) -> None:
    big = TEXT * 20_000  # ~900 KiB of text: a few KiB compressed
    repo, entries = _repo_with([[big, b"end"]], mode="compress")
    got = _restore(repo, entries, tmp_path / "out", pack_bytes=256 * 1024)
    assert list(got.values()) == [big, b"end"]


@pytest.mark.parametrize("pack_bytes", [None, 64 * 1024])
def test_a_tampered_pack_writes_nothing(tmp_path: Path, pack_bytes: int | None) -> None:
    repo, entries = _repo_with([_contents()], damage=True)
    with pytest.raises(BackupFormatError):
        _restore(repo, entries, tmp_path / "out", pack_bytes=pack_bytes)
    # Damage near the end: whole-pack decryption fails before any member is written;
    # the stream fails at the damaged member, whose file is never put in place.
    assert not (tmp_path / "out" / entries[-1].path).exists()


@pytest.mark.parametrize("pack_bytes", [None, 64 * 1024])
def test_a_member_past_the_pack_end_is_refused(tmp_path: Path, pack_bytes: int | None) -> None:
    repo, entries = _repo_with([[os.urandom(1000)]])
    f = entries[0]
    lying = FileEntry(f.path, "file", 0o640, 0, size=f.size, sha256=f.sha256,
                      objects=f.objects, offset=10)
    with pytest.raises(BackupError, match="shorter"):
        _restore(repo, [lying], tmp_path / "out", pack_bytes=pack_bytes)


def test_a_member_with_the_wrong_content_is_refused(tmp_path: Path) -> None:
    repo, entries = _repo_with([[os.urandom(1000), os.urandom(1000)]])
    f = entries[1]
    wrong = FileEntry(f.path, "file", 0o640, 0, size=f.size, sha256=entries[0].sha256,
                      objects=f.objects, offset=f.offset)
    with pytest.raises(BackupFormatError, match="SHA-256"):
        _restore(repo, [entries[0], wrong], tmp_path / "out")
    assert not (tmp_path / "out" / f.path).exists()
