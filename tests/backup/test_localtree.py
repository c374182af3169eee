"""The local target's tree writer gives what ``tar --extract`` gives over the wire.

The oracle is the real thing: the same entries written through
:func:`forge_ci.backup.tarstream.write_tree` into GNU tar on this machine.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from forge_ci.backup import localtree
from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.localtree import write_new_tree
from forge_ci.backup.pack import SEGMENT
from forge_ci.backup.repo import Repository
from forge_ci.backup.restore import plan_restore, run_restore
from forge_ci.backup.snapshot import FileEntry
from forge_ci.backup.take import Source, take_snapshot
from forge_ci.backup.tarstream import tar_info, write_tree
from forge_ci.config.backup import BackupConfig
from forge_ci.errors import BackupError
from forge_ci.remote import LocalHost
from forge_ci.store.file import FileStore

T = 1_700_000_000_123_456_789
BIG = os.urandom(3 * 1024 * 1024 + 17)  # written in uneven chunks
CONTENT = {"up/a.txt": b"hello\n", "up/empty": b"", "up/2024/01/big.mp4": BIG,
           "up/2024/ro.txt": b"read only\n", "up/odd name \u00e9.jpg": os.urandom(513)}


def _entries() -> list[FileEntry]:
    dirs = [FileEntry("up", "dir", 0o755, T + 1), FileEntry("up/2024", "dir", 0o750, T + 2),
            FileEntry("up/2024/01", "dir", 0o555, T + 3)]  # no write bit: set last
    files = [FileEntry(p, "file", 0o444 if "ro" in p else 0o640, T + 10 + i, size=len(c),
                       sha256=hashlib.sha256(c).hexdigest())
             for i, (p, c) in enumerate(CONTENT.items())]
    links = [FileEntry("up/latest", "symlink", 0o777, T + 99, target="2024/01/big.mp4")]
    return dirs + files + links


def _chunks(data: bytes) -> Iterator[bytes]:
    pos, step = 0, 1
    while pos < len(data):
        yield data[pos:pos + step]
        pos += step
        step = step * 7 + 1


def _tree(root: Path) -> dict[str, tuple[str, int, int, bytes | str]]:
    out: dict[str, tuple[str, int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", 0, st.st_mtime_ns, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mode & 0o7777, st.st_mtime_ns, b"")
        else:
            out[rel] = ("file", st.st_mode & 0o7777, st.st_mtime_ns, path.read_bytes())
    return out


def _make_writable(root: Path) -> None:
    for d in [root, *root.rglob("*")]:
        if d.is_dir() and not d.is_symlink():
            d.chmod(0o755)


def test_the_tree_is_byte_for_byte_what_tar_extracts(tmp_path: Path) -> None:
    entries = _entries()
    by_name = {e.path: e for e in entries}
    write_new_tree(str(tmp_path / "direct"), entries, lambda e: _chunks(CONTENT[e.path]))
    write_tree(LocalHost(), str(tmp_path / "tar"),
               (tar_info(e.path, e.type, e.mode, e.mtime_ns, size=e.size, target=e.target)
                for e in entries),
               lambda info: _chunks(CONTENT[by_name[info.name.rstrip("/")].path]))
    direct, tar = _tree(tmp_path / "direct"), _tree(tmp_path / "tar")
    try:
        assert direct == tar
        assert direct["up/2024/01/big.mp4"][3] == BIG
        assert direct["up/empty"] == ("file", 0o640, T + 11, b"")
        assert direct["up/2024/01"][1:3] == (0o555, T + 3)
        assert direct["up/2024/ro.txt"][1] == 0o444
        assert direct["up/latest"] == ("link", 0, T + 99, "2024/01/big.mp4")
    finally:
        _make_writable(tmp_path)


@pytest.mark.parametrize(("data", "what"), [(b"hell", "ended after 4 bytes"),
                                            (b"hello\n!", "longer than its recorded size")])
def test_content_of_the_wrong_size_is_refused(tmp_path: Path, data: bytes, what: str) -> None:
    entry = FileEntry("a.txt", "file", 0o644, T, size=6)
    with pytest.raises(BackupError, match=what):
        write_new_tree(str(tmp_path / "d"), [entry], lambda _e: [data])


def test_a_failing_content_check_propagates_and_runs_to_the_end(tmp_path: Path) -> None:
    class Damaged(Exception):
        pass

    def content(_e: FileEntry) -> Iterable[bytes]:
        yield b"x" * 6
        raise Damaged("SHA-256 mismatch")  # fires only once the content is complete

    with pytest.raises(Damaged):
        write_new_tree(str(tmp_path / "d"), [FileEntry("a", "file", 0o644, T, size=6)],
                       content)


@pytest.mark.parametrize("path", ["../escape", "/etc/escape", "a/../../escape"])
def test_a_path_leaving_the_directory_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(BackupError, match="refusing to write"):
        write_new_tree(str(tmp_path / "d"), [FileEntry(path, "file", 0o644, T, size=1)],
                       lambda _e: [b"x"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d"]


def test_an_existing_file_or_link_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").symlink_to(outside)
    with pytest.raises(BackupError, match="File exists"):
        write_new_tree(str(tmp_path / "d"), [FileEntry("a", "file", 0o644, T, size=1)],
                       lambda _e: [b"x"])
    assert outside.read_bytes() == b"keep"


def _state(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body: bytes | str = (os.readlink(p) if p.is_symlink() else
                             b"" if p.is_dir() else p.read_bytes())
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return out


def test_a_local_restore_is_byte_for_byte_the_snapshot(tmp_path: Path) -> None:
    """Many small files (written by the workers that unpack their packs), empty
    files, two files of one content, a file of several segments, a symlink, modes
    and nanosecond mtimes: the drill is the tree that was backed up."""
    root, store = tmp_path / "env", FileStore(tmp_path / "store")
    up = root / "uploads"
    for i in range(300):
        d = up / f"{2020 + i % 3}" / f"{i % 7:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img-{i}.jpg").write_bytes(os.urandom(1 + (i * 7919) % 60_000))
    (up / "empty").write_bytes(b"")
    (up / "2020" / "empty too").write_bytes(b"")
    (up / "copy.jpg").write_bytes((up / "2020" / "00" / "img-0.jpg").read_bytes())
    (up / "video.mp4").write_bytes(os.urandom(2 * SEGMENT + 12_345))
    (up / "private.txt").write_text("secret\n")
    (up / "private.txt").chmod(0o600)
    (up / "2021").chmod(0o750)
    (up / "latest").symlink_to("video.mp4")
    for i, p in enumerate(sorted(up.rglob("*"))):
        os.utime(p, ns=(T + i, T + i), follow_symlinks=False)
    identity = generate_identity()
    cfg = BackupConfig(store=f"file://{tmp_path / 'store'}", paths=("uploads",))
    writer = Repository(store, "site", "prod", recipients=[identity.recipient])
    sid = take_snapshot(writer, Source(LocalHost(), str(root), "site", "prod", ("local",)),
                        cfg).snapshot_id
    reader = Repository(store, "site", "prod", identities=[identity])
    ref = reader.resolve(sid)
    plan = plan_restore(ref, reader.load(ref), cfg, str(root), to_dir=str(tmp_path / "drill"))
    run_restore(plan, reader, LocalHost(), cfg, yes=False)
    assert _state(tmp_path / "drill" / "uploads") == _state(up)
    assert [p.name for p in (tmp_path / "drill").iterdir()] == ["uploads"]  # no staging left


def _resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as util-linux's ``fincore`` counts them."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def _on_tmpfs(path: Path) -> bool:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return out.strip() == "tmpfs"


# A large file's sizes: whole aligned buffers, whole blocks, and a partial last block.
LARGE = [localtree.DIRECT_MIN, localtree.DIRECT_MIN + 3 * 4096,
         2 * localtree.DIRECT_MIN + 12_345]


@pytest.mark.parametrize("size", LARGE)
def test_a_large_file_is_written_whole_and_left_out_of_the_page_cache(
        tmp_path: Path, size: int) -> None:
    """A restore does not read back what it wrote: a large file goes past the page
    cache (which would push the server's working set out), and is still exactly its
    content, its mode and its mtime - however its pieces were cut."""
    if _on_tmpfs(tmp_path):
        pytest.skip("tmpfs is the page cache")
    data = os.urandom(size)
    entry = FileEntry("big.mp4", "file", 0o640, T, size=size)
    write_new_tree(str(tmp_path / "d"), [entry], lambda _e: _chunks(data))
    path = tmp_path / "d" / "big.mp4"
    assert _resident(path) <= 4096  # at most the partial last block
    assert path.read_bytes() == data
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, T)


def test_a_file_system_that_refuses_direct_writes_gets_the_file_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes cut off the file system's block size are refused by it (EINVAL, as a
    file system with larger blocks than forge aligns to would refuse them): the
    file is then written through the page cache, byte for byte."""
    monkeypatch.setattr(localtree, "_STAGE", 4 * 1024 * 1024 + 1000)
    data = os.urandom(localtree.DIRECT_MIN + 4321)
    entry = FileEntry("big.mp4", "file", 0o600, T, size=len(data))
    write_new_tree(str(tmp_path / "d"), [entry], lambda _e: _chunks(data))
    assert (tmp_path / "d" / "big.mp4").read_bytes() == data


@pytest.mark.parametrize(("extra", "what"), [(-1, "ended after"), (1, "longer than")])
def test_a_large_content_of_the_wrong_size_is_refused(tmp_path: Path, extra: int,
                                                      what: str) -> None:
    entry = FileEntry("big", "file", 0o644, T, size=localtree.DIRECT_MIN)
    with pytest.raises(BackupError, match=what):
        write_new_tree(str(tmp_path / "d"), [entry],
                       lambda _e: [bytes(localtree.DIRECT_MIN + extra)])


def test_a_failed_direct_write_fails_the_file_with_the_system_s_reason(
        tmp_path: Path) -> None:
    """The kernel refuses a direct write past the process's file size limit (EFBIG, as
    a full disk gives ENOSPC): the file fails with the system's reason."""
    limit = localtree.DIRECT_MIN // 2
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        entry = FileEntry("big", "file", 0o644, T, size=localtree.DIRECT_MIN)
        with pytest.raises(BackupError, match="File too large"):
            write_new_tree(str(tmp_path / "d"), [entry],
                           lambda _e: _chunks(bytes(localtree.DIRECT_MIN)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (tmp_path / "d" / "big").stat().st_size <= limit
