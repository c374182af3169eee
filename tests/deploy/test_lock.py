"""The deploy lock with a script run under it in the same round trip (how a deploy
observes its target): the script's output comes back whole, an ``exit`` in it does
not let the lock go, and a second run is still refused while the first holds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forge_ci.deploy.lock import Lock
from forge_ci.deploy.observe import observe, observe_script, parse_observed
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ConnectError, LockedError
from forge_ci.remote import LocalHost

OWNER = {"command": "deploy", "actor": "first-run"}


def test_the_script_under_the_lock_returns_its_output_and_the_lock_stays_held(
        tmp_path: Path) -> None:
    layout = Layout(str(tmp_path / "site"))
    host = LocalHost()
    # NULs, a last line without a newline, then an exit: all of it comes back, and the
    # exit ends the script, not the command that holds the lock.
    script = "printf 'a\\0b\\0no newline'; exit 3; echo never"
    with Lock(host, layout, OWNER, after=script) as lock:
        assert lock.output == b"a\0b\0no newline"
        with pytest.raises(LockedError, match=r"another forge run holds the lock.*first-run"):
            Lock(host, layout, {"command": "deploy", "actor": "second-run"}).acquire()
    # Released when the holder ends: the next run gets it.
    with Lock(host, layout, OWNER, after="printf x") as again:
        assert again.output == b"x"


def test_observing_under_the_lock_sees_what_a_separate_observation_sees(
        tmp_path: Path) -> None:
    root = tmp_path / "site"
    (root / "releases" / "r1").mkdir(parents=True)
    (root / "current").symlink_to("releases/r1")
    (root / ".forge").mkdir()
    (root / ".forge" / "log.jsonl").write_text("")
    layout = Layout(str(root))
    host = LocalHost()
    alone = observe(host, layout, ["web/app/uploads"])
    with Lock(host, layout, OWNER, after=observe_script(layout, ["web/app/uploads"])) as lock:
        locked = parse_observed(host.name, layout, lock.output)
    assert locked == alone and locked.current == "r1" and locked.dirs == ("r1",)


def test_a_refused_lock_runs_nothing_under_it(tmp_path: Path) -> None:
    layout = Layout(str(tmp_path / "site"))
    host = LocalHost()
    witness = tmp_path / "ran"
    with Lock(host, layout, OWNER), pytest.raises(LockedError):
        Lock(host, layout, {"actor": "second-run"}, after=f"touch {witness}").acquire()
    assert not witness.exists()


def test_observe_lists_releases_without_forges_own_dot_entries(tmp_path: Path) -> None:
    root = tmp_path / "site"
    for name in ("r1", "r2", ".forge-base-r2", ".forge-trash-r0", "..odd"):
        (root / "releases" / name).mkdir(parents=True)
    (root / "current").symlink_to("releases/r2")
    seen = observe(LocalHost(), Layout(str(root)))
    assert seen.current == "r2" and seen.dirs == ("r1", "r2")
    assert seen.staged == (".forge-base-r2",)


def test_a_tar_that_is_not_gnu_tar_is_refused_before_the_first_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tar").write_text("#!/bin/sh\necho 'tar (busybox) 1.36'\n")
    (fake / "tar").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    root = tmp_path / "site"
    (root / "releases").mkdir(parents=True)
    with pytest.raises(ConnectError, match="GNU tar"):
        observe(LocalHost(), Layout(str(root)))
    # Once a release is live, the tar that unpacked it was checked: no tar is run.
    (root / "releases" / "r1").mkdir()
    (root / "current").symlink_to("releases/r1")
    assert observe(LocalHost(), Layout(str(root))).current == "r1"
