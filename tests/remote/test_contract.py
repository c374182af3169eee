"""The Host contract (forge_ci/remote/base.py), one suite run against every transport:
LocalHost, and SshHost through the lab's real sshd. Both run on this machine, so the
test checks what each operation left with plain os calls."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab.sshd import SshHost as LabSshd

from forge_ci.errors import RemoteCommandError
from forge_ci.remote import Host, LocalHost
from forge_ci.remote.base import (
    Part,
    append_text_script,
    batch,
    point_link_script,
    sh,
    write_atomic_script,
)
from forge_ci.remote.ssh import connector


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.lab)])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    if request.param == "local":
        with LocalHost() as local:
            yield local
        return
    sshd: LabSshd = request.getfixturevalue("sshd_host")
    with connector(sshd.private_key, sshd.known_hosts)(sshd.host, sshd.port, sshd.user) as ssh:
        yield ssh


@pytest.fixture
def work(host: Host) -> Iterator[Path]:
    """A directory the host's user owns (the SSH user is not the test's)."""
    path = Path(host.run("mktemp -d").text.strip())
    yield path
    host.run(f"chmod -R u+w {path}; rm -rf {path}", check=False)


def _leftovers(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if "forge-tmp" in n)


# -- run / start -------------------------------------------------------------

def test_run_returns_status_and_both_streams(host: Host) -> None:
    r = host.run("cat; echo to-err >&2; exit 4", input=b"in\0put", check=False)
    assert (r.status, r.stdout, r.stderr) == (4, b"in\0put", b"to-err\n")


def test_a_failing_command_raises_with_check(host: Host) -> None:
    with pytest.raises(RemoteCommandError, match="exit 3") as caught:
        host.run("echo why >&2; exit 3")
    assert caught.value.exit_status == 3
    assert "why" in str(caught.value)


def test_start_streams_both_ways(host: Host) -> None:
    proc = host.start("while read -r line; do echo \"got $line\"; done; echo done >&2")
    for word in (b"one", b"two"):
        proc.write(word + b"\n")
        assert proc.readline() == b"got " + word + b"\n"  # answered before stdin closed
    proc.close_stdin()
    assert proc.read() == b""
    assert proc.wait(10) == 0
    assert proc.stderr() == b"done\n"


def test_a_streamed_megabyte_arrives_whole(host: Host) -> None:
    data = os.urandom(1 << 20)
    proc = host.start("cat")
    received = bytearray()

    def pump() -> None:
        while chunk := proc.read():
            received.extend(chunk)

    reader = threading.Thread(target=pump)
    reader.start()
    proc.write(data)
    proc.close_stdin()
    reader.join(30)
    assert proc.wait(10) == 0 and bytes(received) == data


# -- files -------------------------------------------------------------------

def test_read_of_a_missing_file_is_none(host: Host, work: Path) -> None:
    assert host.read(str(work / "nothing")) is None


def test_write_atomic_then_read_round_trips_bytes(host: Host, work: Path) -> None:
    path = str(work / "f")
    host.write_atomic(path, b"one\0\xff", mode=0o600)
    assert host.read(path) == b"one\0\xff"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    host.write_atomic(path, b"two")
    assert host.read(path) == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert _leftovers(work) == []


def test_a_failed_write_leaves_the_old_content(host: Host, work: Path) -> None:
    path = work / "f"
    host.write_atomic(str(path), b"old")
    # The disk fills up while the temp file is written (root ignores a read-only
    # directory, not this): nothing may be renamed over the old file.
    host.run(f"ln -s /dev/full {path}.forge-tmp")
    with pytest.raises(RemoteCommandError, match="writing"):
        host.write_atomic(str(path), b"new")
    assert not path.is_symlink() and path.read_bytes() == b"old"
    assert _leftovers(work) == []


def test_a_write_into_a_read_only_directory_fails_and_changes_nothing(
        host: Host, work: Path) -> None:
    if host.run("id -u").text.strip() == "0":
        target = "/proc/forge-contract"  # read-only for root too
    else:
        host.write_atomic(str(work / "f"), b"old")
        host.run(f"chmod 555 {work}")
        target = str(work / "f")
    with pytest.raises(RemoteCommandError):
        host.write_atomic(target, b"new")
    if target.startswith(str(work)):
        assert (work / "f").read_bytes() == b"old" and _leftovers(work) == []


def test_a_secret_written_is_never_in_a_command_line(host: Host, work: Path) -> None:
    secret = f"s3cret-{os.urandom(8).hex()}".encode()
    path = work / "secret"
    host.run(f"mkfifo {path}.forge-tmp")  # the write blocks until it is read: look meanwhile
    writer = threading.Thread(target=host.write_atomic, args=(str(path), secret))
    writer.start()
    seen = b""
    for _ in range(10):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):  # it ended meanwhile
                    seen += Path(f"/proc/{pid}/cmdline").read_bytes()
        time.sleep(0.02)
    with open(f"{path}.forge-tmp", "rb") as fifo:
        assert fifo.read() == secret
    writer.join(10)
    assert seen and secret not in seen


def test_append_creates_then_appends(host: Host, work: Path) -> None:
    path = str(work / "log")
    host.append(path, b"a\n")
    host.append(path, b"b\n")
    assert host.read(path) == b"a\nb\n"


def test_makedirs_makes_parents_and_is_idempotent(host: Host, work: Path) -> None:
    host.makedirs(str(work / "a/b/c"), str(work / "d"))
    host.makedirs(str(work / "a/b/c"))
    assert (work / "a/b/c").is_dir() and (work / "d").is_dir()


def test_remove_trees_removes_trees_and_missing_paths_are_fine(host: Host, work: Path) -> None:
    host.makedirs(str(work / "t/sub"))
    host.write_atomic(str(work / "t/sub/f"), b"x")
    host.write_atomic(str(work / "keep"), b"x")
    host.remove_trees([str(work / "t"), str(work / "never-was")])
    host.remove_trees([])
    assert sorted(os.listdir(work)) == ["keep"]


def test_point_link_creates_and_replaces_a_relative_link(host: Host, work: Path) -> None:
    link = str(work / "current")
    host.point_link(link, "releases/one")
    assert os.readlink(link) == "releases/one"
    host.point_link(link, "releases/two")
    assert os.readlink(link) == "releases/two"
    assert _leftovers(work) == []


def test_point_link_is_never_missing_while_it_switches(host: Host, work: Path) -> None:
    link = work / "current"
    host.point_link(str(link), "a")
    missing = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                os.readlink(link)
            except OSError as e:
                missing.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(20):
            host.point_link(str(link), "b" if i % 2 else "a")
    finally:
        stop.set()
        watcher.join()
    assert missing == []


def test_point_link_replaces_a_temp_link_a_killed_run_left(host: Host, work: Path) -> None:
    link = work / "current"
    for left in ("releases/old", "dangling/nowhere"):
        (work / "current.forge-tmp").symlink_to(left)
        host.point_link(str(link), "releases/new")
        assert os.readlink(link) == "releases/new" and _leftovers(work) == []


def test_a_failed_point_link_leaves_no_temp_link(host: Host, work: Path) -> None:
    host.makedirs(str(work / "current/inside"))  # a directory, not a link: mv -T refuses
    with pytest.raises(RemoteCommandError, match="pointing"):
        host.point_link(str(work / "current"), "releases/x")
    assert (work / "current/inside").is_dir() and _leftovers(work) == []


def test_rename_replaces_the_destination(host: Host, work: Path) -> None:
    host.write_atomic(str(work / "a"), b"a")
    host.write_atomic(str(work / "b"), b"b")
    host.rename(str(work / "a"), str(work / "b"))
    assert sorted(os.listdir(work)) == ["b"] and (work / "b").read_bytes() == b"a"


def test_batch_runs_parts_in_order_in_one_round_trip(host: Host, work: Path) -> None:
    log, manifest = work / "log", work / "m.json"
    batch(host, [Part(sh("mkdir", "-p", "--", str(work / "releases")), "creating releases"),
                 Part(append_text_script(str(log), "one 'quoted' $HOME\n"), "appending"),
                 Part(write_atomic_script(str(manifest)), "writing", b"{}\n"),
                 Part(point_link_script(str(work / "current"), "releases"), "pointing")])
    assert log.read_text() == "one 'quoted' $HOME\n"
    assert manifest.read_bytes() == b"{}\n"
    assert os.readlink(work / "current") == "releases"


def test_batch_stops_at_the_first_failure_and_names_it(host: Host, work: Path) -> None:
    log = work / "log"
    with pytest.raises(RemoteCommandError, match=r"^removing the old release failed on"):
        batch(host, [Part(append_text_script(str(log), "removing old\n"), "appending"),
                     Part("echo nope >&2; exit 1", "removing the old release"),
                     Part(append_text_script(str(log), "after\n"), "appending again")])
    assert log.read_text() == "removing old\n"  # the event before it, nothing after
