"""The release log: states, order from the log (never mtimes), and what pruning keeps."""

from __future__ import annotations

import subprocess
from pathlib import Path

from forge_ci.deploy.releases import (
    Origin,
    ReleaseLog,
    event,
    human_duration,
    list_releases,
    new_release_id,
    prune_plan,
    render_releases,
    unfinished,
)


def log_of(*pairs: tuple[str, str]) -> ReleaseLog:
    return ReleaseLog([event(r, s) for r, s in pairs])  # type: ignore[arg-type]


def test_ids_sort_by_time_and_never_collide() -> None:
    a = new_release_id("ab" * 32, now=1_700_000_000)
    b = new_release_id("cd" * 32, now=1_700_000_001)
    assert a < b and a.startswith("20231114T221320Z-abababab")
    assert new_release_id("ab" * 32, now=1_700_000_000, taken=[a]) == a + "-2"


def test_a_line_cut_short_by_a_kill_is_ignored() -> None:
    data = event("r1", "live").to_line() + b'{"release": "r2", "sta'
    log = ReleaseLog.parse(data)
    assert log.states == {"r1": "live"}


def test_hostile_release_names_in_the_log_are_ignored() -> None:
    data = b'{"release": "../../etc", "state": "live", "time": ""}\n'
    assert ReleaseLog.parse(data).states == {}


def test_prune_keeps_newest_current_and_last_good() -> None:
    log = log_of(("r1", "live"), ("r2", "live"), ("r3", "live"), ("r4", "bad"), ("r5", "bad"))
    dirs = ["r1", "r2", "r3", "r4", "r5"]
    # keep 2 newest (r4, r5), plus current r3 which is also the last good
    assert prune_plan(log, dirs, "r3", keep=2) == ["r1", "r2"]
    # current rolled back to r1: r1 and last good r3 stay
    assert prune_plan(log, dirs, "r1", keep=1) == ["r2", "r4"]


def test_unfinished_and_unknown_dirs_are_removed_first() -> None:
    log = log_of(("r1", "live"), ("r2", "preparing"))
    assert unfinished(log, ["r1", "r2", "stray"], "r1") == ["r2", "stray"]
    assert unfinished(log, ["r1", "r2"], "r2") == []  # current is never removed


def test_rollback_target_is_the_previous_live_release() -> None:
    log = log_of(("r1", "live"), ("r2", "live"), ("r3", "bad"), ("r4", "live"))
    assert log.previous_good("r4") == "r2"
    assert log.previous_good("r2") == "r1"
    assert log.previous_good("r1") is None


def test_listing_is_newest_first_with_states() -> None:
    log = log_of(("r1", "live"), ("r2", "bad"))
    infos = list_releases(log, ["r1", "r2", "x"], "r1")
    assert [(i.id, i.state, i.current) for i in infos] == [
        ("x", "unknown", False),
        ("r2", "bad", False),
        ("r1", "live", True),
    ]


def test_states_read_the_same_from_old_and_new_logs() -> None:
    # An old log leaves replaced releases live; a new one says previous / rolled_back.
    old = log_of(("r1", "live"), ("r2", "live"), ("r3", "prepared"), ("r3", "bad"))
    new = log_of(("r1", "live"), ("r2", "live"), ("r1", "previous"), ("r2", "rolled_back"),
                 ("r1", "live"), ("r3", "bad"))
    assert [(i.id, i.state) for i in list_releases(old, ["r1", "r2", "r3"], "r2")] == [
        ("r3", "bad"), ("r2", "live"), ("r1", "previous")]
    assert [(i.id, i.state) for i in list_releases(new, ["r1", "r2", "r3"], "r1")] == [
        ("r3", "bad"), ("r2", "rolled_back"), ("r1", "live")]
    # A release rolled back from stays a rollback target; a bad one never is.
    assert new.previous_good("r3") == "r2"


def test_the_log_keeps_commit_subject_actor_time_and_duration() -> None:
    data = (event("r1", "preparing", "alice", info=(("commit", "abc123def456"),
                                                    ("subject", "Fix header"),
                                                    ("run", "https://ci/runs/7"))).to_line()
            + event("r1", "prepared", "alice").to_line()
            + event("r1", "live", "alice", info=(("seconds", "83.2"),)).to_line()
            + event("r1", "previous", "bob", "replaced by r2").to_line())
    [info] = list_releases(ReleaseLog.parse(data), ["r1"], None)
    assert (info.state, info.commit, info.subject, info.actor, info.seconds, info.run) == (
        "previous", "abc123def456", "Fix header", "alice", 83.2, "https://ci/runs/7")
    assert info.note == "replaced by r2" and info.time.endswith("Z")
    table = render_releases([info]).splitlines()
    assert table[0].split() == ["release", "state", "commit", "subject", "actor",
                                "time", "took", "snapshot"]
    assert table[1].split()[:6] == ["r1", "previous", "abc123def4", "Fix", "header", "alice"]
    assert table[1].endswith("1m 23s  -")  # took, then no database snapshot
    assert human_duration(5) == "5s" and human_duration(3725) == "1h 02m"


def test_the_origin_comes_from_git_and_the_ci_variables_passed_in(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "Add the shop page"],
                   check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    o = Origin.from_checkout(tmp_path, {"GITHUB_ACTOR": "carol", "GITHUB_RUN_ID": "99",
                                        "GITHUB_SERVER_URL": "https://github.com",
                                        "GITHUB_REPOSITORY": "org/site", "USER": "root"})
    assert o == Origin("carol", head, "Add the shop page",
                       "https://github.com/org/site/actions/runs/99")
    # Outside git (an artifact built elsewhere): GITHUB_SHA, and the local user.
    bare = Origin.from_checkout(tmp_path / "nogit", {"GITHUB_SHA": "f" * 40, "USER": "dave"})
    assert bare == Origin("dave", "f" * 40, "", "")
