"""The release log: states, order from the log (never mtimes), and what pruning keeps."""

from __future__ import annotations

from forge_ci.deploy.releases import (
    ReleaseLog,
    event,
    list_releases,
    new_release_id,
    prune_plan,
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
