"""Deploy and rollback plans as data: observed facts in, the steps that will run out.

No server: these are the plans ``--dry-run`` prints and the executor carries out."""

from __future__ import annotations

from typing import Any

import pytest

from forge_ci.build.manifest import Entry, Manifest
from forge_ci.config.models import EnvironmentConfig
from forge_ci.deploy.observe import Observed
from forge_ci.deploy.plan import plan_deploy, plan_rollback
from forge_ci.deploy.releases import Event, ReleaseLog, State
from forge_ci.deploy.steps import (
    Adopt,
    LinkShared,
    MakeDirs,
    PointLink,
    ProbePhp,
    Record,
    RefreshPhp,
    RemoveReleases,
    RemoveStaged,
    RunHooks,
    Ship,
    StageNextBase,
    Step,
    Switch,
    WriteManifest,
)
from forge_ci.errors import DeployFailed, UsageError

NEW = "r9"


def _manifest(**files: str) -> Manifest:
    entries = {"web": Entry("dir", 0o755)}
    entries.update({p: Entry("file", 0o644, len(c), c * 8) for p, c in files.items()})
    return Manifest(entries)


def _log(*events: tuple[str, State]) -> ReleaseLog:
    return ReleaseLog([Event(r, s, "2026-01-01T00:00:00Z") for r, s in events])


def _config(**extra: Any) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({"path": "site", "marker": False, **extra})


def _finished(*ids: str) -> list[tuple[str, State]]:
    return [e for r in ids for e in ((r, "preparing"), (r, "prepared"), (r, "live"))]


def _steps(phase: tuple[Any, ...], host: str = "h") -> list[Step]:
    return list(next(h.steps for h in phase if h.host == host))


def test_first_deploy_sends_everything_and_prunes_nothing() -> None:
    new = _manifest(**{"web/index.php": "a"})
    plan = plan_deploy("prod", _config(), [Observed("h")], new, NEW)
    assert _steps(plan.prepare) == [
        MakeDirs(), Record(NEW, "preparing"), WriteManifest(NEW),
        Ship(NEW, None, ("web", "web/index.php"), (), 0, ()),
        ProbePhp(NEW), LinkShared(NEW, ()), Record(NEW, "prepared")]
    assert _steps(plan.switch) == [Switch(NEW)]
    assert _steps(plan.refresh) == [RefreshPhp(NEW)]
    assert _steps(plan.after_switch) == []
    assert _steps(plan.finish) == [Record(NEW, "live"), StageNextBase(NEW)]
    assert _steps(plan.undo) == [Switch(None), RefreshPhp(None)]  # current moves aside


def test_redeploy_ships_only_the_difference_from_the_live_release() -> None:
    old = _manifest(**{"web/index.php": "a", "web/gone.php": "b", "web/same.css": "c"})
    new = _manifest(**{"web/index.php": "A", "web/same.css": "c", "web/new.js": "d"})
    obs = Observed("h", "r1", _log(*_finished("r1")), ("r1",), (".forge-base-r1",), old)
    ship = next(s for s in _steps(plan_deploy("prod", _config(dotenv={"K": "v"}), [obs], new,
                                              NEW).prepare) if isinstance(s, Ship))
    assert ship.base == "r1"
    assert sorted(ship.send) == ["web/index.php", "web/new.js"]
    assert ship.linked == 2  # web and web/same.css
    # Changed and gone files are unlinked, and so is what each release gets anew.
    assert set(ship.remove) == {"web/index.php", "web/gone.php", ".env",
                                "web/forge-release.php", ".forge-php-refresh.php",
                                "web/wp/.maintenance"}
    assert ship.generated == (".env",)


def test_a_stored_manifest_that_is_missing_means_a_full_send() -> None:
    obs = Observed("h", "r1", _log(*_finished("r1")), ("r1",))
    ship = next(s for s in _steps(plan_deploy("prod", _config(), [obs], _manifest(), NEW).prepare)
                if isinstance(s, Ship))
    assert ship.base is None and ship.send == ("web",)


def test_unfinished_releases_are_removed_first_and_the_stale_staged_copy_too() -> None:
    log = _log(*_finished("r1"), ("r2", "preparing"), ("r3", "preparing"))
    # r2 died after making its directory, r3 before; "stray" is not in the log.
    obs = Observed("h", "r1", log, ("r1", "r2", "stray"),
                   (".forge-base-r1", ".forge-base-r0", ".forge-base-r0.tmp"))
    steps = _steps(plan_deploy("prod", _config(), [obs], _manifest(), NEW).prepare)
    assert steps[:6] == [
        MakeDirs(), RemoveStaged((".forge-base-r0", ".forge-base-r0.tmp")),
        # Logged before removed: a run killed in between leaves nothing unaccounted for.
        Record("r2", "removed", "unfinished"), Record("r3", "removed", "unfinished"),
        RemoveReleases(("r2", "stray"), "unfinished"),
        Record(NEW, "preparing")]


def test_prune_keeps_keep_releases_newest_finished_ones() -> None:
    ids = ["r1", "r2", "r3", "r4"]
    log = _log(*_finished(*ids), ("r5", "preparing"), ("r5", "prepared"), ("r5", "bad"))
    obs = Observed("h", "r4", log, (*ids, "r5"))
    finish = _steps(plan_deploy("prod", _config(keep_releases=3), [obs], _manifest(),
                                NEW).finish)
    # Kept: the new release, r5 (bad, but among the newest three), r4.
    assert finish == [Record(NEW, "live"), Record("r4", "previous", "replaced by r9"),
                      Record("r1", "removed", "pruned"),
                      Record("r2", "removed", "pruned"), Record("r3", "removed", "pruned"),
                      # Renamed away at once, deleted in the background.
                      RemoveReleases(("r1", "r2", "r3"), "pruned", later=True),
                      StageNextBase(NEW)]


def test_prune_never_counts_releases_the_run_removes_as_unfinished() -> None:
    log = _log(*_finished("r1", "r2"), ("r3", "preparing"))
    obs = Observed("h", "r2", log, ("r1", "r2", "r3"))
    finish = _steps(plan_deploy("prod", _config(keep_releases=2), [obs], _manifest(),
                                NEW).finish)
    assert RemoveReleases(("r1",), "pruned", later=True) in finish
    assert not any(isinstance(s, RemoveReleases) and "r3" in s.releases for s in finish)


def test_hooks_run_in_the_release_with_the_previous_release_named() -> None:
    config = _config(hooks={"before_switch": ["wp core update-db"],
                            "after_switch": ["wp cache flush"]})
    obs = Observed("h", "r1", _log(*_finished("r1")), ("r1",))
    plan = plan_deploy("prod", config, [obs], _manifest(), NEW)
    assert _steps(plan.prepare)[-2:] == [
        RunHooks("before_switch", NEW, "r1", ("wp core update-db",)), Record(NEW, "prepared")]
    assert _steps(plan.after_switch) == [RunHooks("after_switch", NEW, "r1", ("wp cache flush",))]


@pytest.mark.parametrize("preview", [True, False])
def test_preview_route_present_or_absent(preview: bool) -> None:
    extra: dict[str, Any] = {"url": "https://example.org", "marker": True,
                             "health": [{"url": "https://example.org/wp/", "contains": "ok"}]}
    if preview:
        extra["preview"] = {"url": "http://127.0.0.1:8081", "link": "next"}
    plan = plan_deploy("prod", _config(**extra), [Observed("a"), Observed("b")], _manifest(), NEW)
    if preview:
        assert [h.steps for h in plan.preview] == [(PointLink("next", NEW),)] * 2
        assert [c.url for c in plan.preview_checks] == [
            "http://127.0.0.1:8081/forge-release.php", "http://127.0.0.1:8081/wp/"]
    else:
        assert plan.preview == () and plan.preview_checks == ()
    assert [c.url for c in plan.checks] == ["https://example.org/forge-release.php",
                                            "https://example.org/wp/"]


def test_every_host_gets_its_own_steps_and_the_json_names_them() -> None:
    a = Observed("a", "r1", _log(*_finished("r1")), ("r1",))
    plan = plan_deploy("prod", _config(), [a, Observed("b")], _manifest(), NEW)
    data = plan.to_json()
    assert [(h["host"], h["current"]) for h in data["hosts"]] == [("a", "r1"), ("b", None)]
    assert [s["op"] for s in data["hosts"][1]["prepare"]] == [
        "make_dirs", "record", "write_manifest", "ship", "probe_php", "link_shared", "record"]
    assert data["hosts"][0]["undo"] == [{"op": "switch", "release": "r1"},
                                        {"op": "refresh_php", "release": "r1"}]
    assert "ship r9: send 1 entries" in plan.render()


def test_rollback_targets_the_newest_good_release_before_the_live_one() -> None:
    log = _log(*_finished("r1", "r2"), ("r3", "preparing"), ("r3", "prepared"), ("r3", "bad"),
               *_finished("r4"))
    obs = Observed("h", "r4", log, ("r1", "r2", "r3", "r4"))
    plan = plan_rollback("prod", _config(), [obs], None)
    assert plan.target == "r2"
    assert _steps(plan.switch) == [Switch("r2")]
    # A manual rollback leaves r4 good: rolling forward again is allowed.
    assert _steps(plan.finish) == [Record("r4", "rolled_back", "rolled back to r2"),
                                   Record("r2", "live", "rollback")]
    assert _steps(plan.undo) == [Switch("r4"), RefreshPhp("r4")]


def test_rollback_to_the_live_release_plans_nothing() -> None:
    obs = Observed("h", "r1", _log(*_finished("r1")), ("r1",))
    plan = plan_rollback("prod", _config(), [obs], "r1")
    assert plan.already_live and plan.switch == () and plan.finish == ()


@pytest.mark.parametrize(("dirs", "to", "message"), [
    (("r1",), None, "no earlier good release"),
    (("r1",), "r0", "not on h"),
    (("r1", "r2"), "r2", "never finished preparing"),
])
def test_rollback_refuses_what_it_cannot_restore(dirs: tuple[str, ...], to: str | None,
                                                 message: str) -> None:
    obs = Observed("h", "r1", _log(*_finished("r1"), ("r2", "preparing")), dirs)
    with pytest.raises(UsageError, match=message):
        plan_rollback("prod", _config(), [obs], to)


# -- strategies and per-host checks ----------------------------------------------

HOSTS = ["deploy@a:22", "deploy@b:22", "deploy@c:22"]


def _multi(**extra: Any) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({
        "path": "/srv/site", "url": "https://example.org",
        "hosts": [{"host": "a"}, {"host": "b", "check_address": "10.0.0.2"}, {"host": "c"}],
        "health": [{"url": "https://example.org/", "contains": "ok"},
                   {"url": "https://status.example.net/ping"}],
        **extra})


def _observed() -> list[Observed]:
    return [Observed(h, "r1", _log(*_finished("r1")), ("r1",)) for h in HOSTS]


def test_together_switches_every_host_in_one_batch() -> None:
    plan = plan_deploy("prod", _multi(), _observed(), _manifest(), NEW)
    assert plan.strategy == "together"
    assert plan.batches == (tuple(HOSTS),)


def test_rolling_switches_and_checks_batch_by_batch() -> None:
    plan = plan_deploy("prod", _multi(strategy="rolling", rolling={"batch": 2}), _observed(),
                       _manifest(), NEW)
    assert plan.batches == ((HOSTS[0], HOSTS[1]), (HOSTS[2],))
    # Every host is prepared before the first switches, and every switch can be undone.
    assert [h.host for h in plan.prepare] == HOSTS
    assert all(_steps(plan.switch, h) == [Switch(NEW)] for h in HOSTS)
    assert all(_steps(plan.undo, h) == [Switch("r1"), RefreshPhp("r1")] for h in HOSTS)
    text = plan.render()
    assert "batch 1/2 (rolling): deploy@a:22, deploy@b:22" in text
    assert "batch 2/2 (rolling): deploy@c:22" in text
    # Batch 2's switch is printed after batch 1's checks.
    assert text.index("check on deploy@b:22") < text.index("switch deploy@c:22")
    out = plan.to_json()
    assert out["strategy"] == "rolling"
    assert out["batches"] == [HOSTS[:2], HOSTS[2:]]


def test_rolling_one_at_a_time_by_default() -> None:
    plan = plan_deploy("prod", _multi(strategy="rolling"), _observed(), _manifest(), NEW)
    assert plan.batches == tuple((h,) for h in HOSTS)


def test_each_host_is_checked_on_its_own_web_server() -> None:
    plan = plan_deploy("prod", _multi(marker=True), _observed(), _manifest(), NEW)
    # check_address where given, else the host's loopback.
    assert plan.check_hosts == ((HOSTS[0], "127.0.0.1"), (HOSTS[1], "10.0.0.2"),
                                (HOSTS[2], "127.0.0.1"))
    # Only the checks aimed at the site: another origin is not the host's to answer.
    assert [c.url for c in plan.host_checks] == ["https://example.org/forge-release.php",
                                                 "https://example.org/"]
    # Through the URL: two passing rounds per host, in a row.
    assert plan.rounds == 6
    out = plan.to_json()["host_checks"]
    assert out["hosts"][1] == {"host": HOSTS[1], "address": "10.0.0.2"}


def test_one_host_is_checked_through_the_url_alone_unless_given_an_address() -> None:
    one = {"path": "/srv/site", "url": "https://example.org", "hosts": [{"host": "a"}]}
    plan = plan_deploy("prod", EnvironmentConfig.model_validate(one), _observed()[:1],
                       _manifest(), NEW)
    assert plan.check_hosts == () and plan.rounds == 1
    one["hosts"] = [{"host": "a", "check_address": "10.0.0.1"}]
    plan = plan_deploy("prod", EnvironmentConfig.model_validate(one), _observed()[:1],
                       _manifest(), NEW)
    assert plan.check_hosts == ((HOSTS[0], "10.0.0.1"),)


@pytest.mark.parametrize(("extra", "message"), [
    ({"strategy": "rolling", "hosts": [{"host": "a"}]}, "at least two hosts"),
    ({"rolling": {"batch": 1}}, "need strategy: rolling"),
    ({"strategy": "rolling", "rolling": {"batch": 0}}, "greater than or equal to 1"),
    ({"strategy": "blue-green"}, "'together' or 'rolling'"),
    ({"hosts": [{"host": "a", "check_address": "10.0.0.1:8080"}]}, "check_address"),
])
def test_strategy_settings_are_checked(extra: dict[str, Any], message: str) -> None:
    base = {"path": "/srv/site", "hosts": [{"host": "a"}, {"host": "b"}]}
    with pytest.raises(ValueError, match=message):
        EnvironmentConfig.model_validate({**base, **extra})


def test_a_deploy_marks_the_release_it_replaces_previous_and_logs_its_origin() -> None:
    obs = Observed("h", "r1", _log(*_finished("r1")), ("r1",))
    origin = (("commit", "abc123"), ("subject", "Fix the header"))
    plan = plan_deploy("prod", _config(), [obs], _manifest(), NEW, origin=origin)
    assert Record(NEW, "preparing", info=origin) in _steps(plan.prepare)
    assert _steps(plan.finish)[:2] == [Record(NEW, "live"),
                                      Record("r1", "previous", "replaced by r9")]


def test_a_forced_rollback_has_no_checks_and_is_logged_as_forced() -> None:
    log = _log(*_finished("r1", "r2"))
    obs = Observed("h", "r2", log, ("r1", "r2"))
    config = _config(url="https://example.org", marker=True)
    assert plan_rollback("prod", config, [obs], None).checks
    plan = plan_rollback("prod", config, [obs], None, force=True)
    assert plan.checks == () and plan.forced
    assert _steps(plan.finish) == [Record("r2", "rolled_back", "rolled back to r1, forced"),
                                   Record("r1", "live", "rollback, forced")]
    assert "FORCED" in plan.render() and plan.to_json()["forced"] is True


def test_rolling_back_and_forward_leaves_a_good_release_good() -> None:
    log = _log(*_finished("r1", "r2"), ("r2", "rolled_back"), ("r1", "live"))
    obs = Observed("h", "r1", log, ("r1", "r2"))
    plan = plan_rollback("prod", _config(), [obs], "r2")
    assert plan.target == "r2"
    assert _steps(plan.finish) == [Record("r1", "rolled_back", "rolled back to r2"),
                                   Record("r2", "live", "rollback")]


def _two(shared_a: tuple[str, ...], shared_b: tuple[str, ...]) -> list[Observed]:
    return [Observed("a", shared=shared_a), Observed("b", shared=shared_b)]


def test_a_shared_path_missing_on_one_host_is_refused_with_the_host_named() -> None:
    config = _config(shared=["web/app/uploads", "config/host.php"])
    observed = _two(("web/app/uploads", "config/host.php"), ("web/app/uploads",))
    with pytest.raises(DeployFailed, match=r"config/host.php is missing on b but present on a"):
        plan_deploy("prod", config, observed, _manifest(), NEW)


def test_a_shared_file_missing_everywhere_is_refused_a_directory_is_created() -> None:
    with pytest.raises(DeployFailed, match=r"shared file config/host.php is missing on every"):
        plan_deploy("prod", _config(shared=["config/host.php"]), _two((), ()), _manifest(), NEW)
    # The build brings the file: shared/ is seeded from the release, as before.
    plan_deploy("prod", _config(shared=["config/host.php"]), _two((), ()),
                _manifest(**{"config/host.php": "x"}), NEW)
    plan = plan_deploy("prod", _config(shared=["web/app/uploads"]), _two((), ()), _manifest(),
                       NEW)
    assert LinkShared(NEW, ("web/app/uploads",)) in _steps(plan.prepare, "b")


def test_an_existing_site_is_refused_without_adopt_and_its_uploads_move_with_it() -> None:
    config = _config(shared=["web/app/uploads"])
    site = [Observed("h", site_paths=("web/app/uploads",))]
    with pytest.raises(DeployFailed, match="--adopt"):
        plan_deploy("prod", config, site, _manifest(), NEW)
    plan = plan_deploy("prod", config, site, _manifest(), NEW, adopt=True)
    assert _steps(plan.prepare)[:2] == [MakeDirs(), Adopt(("web/app/uploads",))]
    assert "adopt the existing site's web/app/uploads -> shared/web/app/uploads" in plan.render()
    # Uploads that no shared path would keep are refused even with --adopt.
    with pytest.raises(DeployFailed, match="not a shared path"):
        plan_deploy("prod", _config(), site, _manifest(), NEW, adopt=True)
