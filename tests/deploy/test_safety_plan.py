"""The safety net as plan data: the snapshot before the switch, the migrate phase and
its maintenance window, rollback --with-database. No server (the lab runs are in
test_safety_net.py)."""

from __future__ import annotations

from typing import Any

import pytest

from forge_ci.build.manifest import Entry, Manifest
from forge_ci.config.models import EnvironmentConfig
from forge_ci.deploy.observe import Observed
from forge_ci.deploy.plan import plan_deploy, plan_rollback
from forge_ci.deploy.releases import Event, ReleaseLog, list_releases
from forge_ci.deploy.steps import (
    MaintenanceOff,
    MaintenanceOn,
    MakeDirs,
    Record,
    RefreshPhp,
    RestoreDatabase,
    RunHooks,
    Step,
    Switch,
    TakeSnapshot,
)
from forge_ci.errors import UsageError

NEW = "r9"
BACKUP = {"store": "file:///srv/backups", "before_deploy": True,
          "database": {"name": "wp", "user": "wp", "password": "pw"}}


def _config(**extra: Any) -> EnvironmentConfig:
    path = "/srv/site" if "hosts" in extra else "site"
    return EnvironmentConfig.model_validate({"path": path, "marker": False, **extra})


def _log(*events: tuple[str, str], snapshot: dict[str, str] | None = None) -> ReleaseLog:
    snaps = snapshot or {}
    return ReleaseLog([Event(r, s, "2026-01-01T00:00:00Z",  # type: ignore[arg-type]
                             snapshot=snaps.get(r, "") if s == "live" else "")
                       for r, s in events])


def _live(*ids: str, snapshot: dict[str, str] | None = None) -> ReleaseLog:
    return _log(*[(r, s) for r in ids for s in ("preparing", "prepared", "live")],
                snapshot=snapshot)


def _hosts(*names: str, current: str = "r1") -> list[Observed]:
    return [Observed(n, current, _live(current), (current,)) for n in names]


def _flat(phase: tuple[Any, ...]) -> list[tuple[str, Step]]:
    return [(h.host, s) for h in phase for s in h.steps]


def _manifest() -> Manifest:
    return Manifest({"web": Entry("dir", 0o755)})


def test_before_deploy_snapshots_the_database_after_prepare_on_the_backup_host() -> None:
    config = _config(hosts=[{"host": "a"}, {"host": "b"}], backup={**BACKUP, "host": "b"})
    observed = [Observed("deploy@a:22"), Observed("deploy@b:22")]
    plan = plan_deploy("prod", config, observed, _manifest(), NEW)
    assert _flat(plan.snapshot) == [("deploy@b:22", TakeSnapshot(NEW))]
    text = plan.render()
    assert text.index("prepare deploy@a:22") < text.index("snapshot deploy@b:22") \
        < text.index("switch deploy@a:22")
    hosts = plan.to_json()["hosts"]
    assert hosts[1]["snapshot"] == [{"op": "take_snapshot", "release": NEW}]
    assert hosts[0]["snapshot"] == []


def test_no_snapshot_unless_asked_for() -> None:
    config = _config(backup={**BACKUP, "before_deploy": False})
    assert plan_deploy("prod", config, [Observed("h")], _manifest(), NEW).snapshot == ()


def test_migrate_before_the_switch_inside_a_maintenance_window_on_every_host() -> None:
    config = _config(hosts=[{"host": "a"}, {"host": "b"}],
                     hooks={"migrate": ["wp core update-db"], "maintenance": True})
    plan = plan_deploy("prod", config, _hosts("a", "b"), _manifest(), NEW)
    # Visitors see the live release (r1): its file goes up on every host first.
    assert _flat(plan.migrate) == [
        ("a", MaintenanceOn("r1")), ("b", MaintenanceOn("r1")),
        ("a", RunHooks("migrate", NEW, "r1", ("wp core update-db",))),
        ("a", MaintenanceOff()), ("b", MaintenanceOff())]
    assert _flat(plan.switch) == [("a", Switch(NEW)), ("b", Switch(NEW))]
    # A failure before the switch takes the file down with the release; after the
    # switch it is down already.
    assert _flat(plan.discard)[0] == ("a", MaintenanceOff("the run failed"))
    assert _flat(plan.undo)[0] == ("a", Switch("r1"))
    assert plan.to_json()["hosts"][0]["migrate"][0] == {"op": "maintenance_on", "release": "r1"}
    assert "migrate a:" in plan.render()


def test_migrate_without_maintenance_or_on_a_first_deploy() -> None:
    config = _config(hooks={"migrate": ["php migrate.php"]})
    plan = plan_deploy("prod", config, _hosts("h"), _manifest(), NEW)
    assert _flat(plan.migrate) == [("h", RunHooks("migrate", NEW, "r1", ("php migrate.php",)))]
    config = _config(hooks={"migrate": ["php migrate.php"], "maintenance": True})
    first = plan_deploy("prod", config, [Observed("h")], _manifest(), NEW)
    # Nothing is live yet: nobody to show a maintenance page to.
    assert [s for _, s in _flat(first.migrate)] == [
        RunHooks("migrate", NEW, None, ("php migrate.php",)), MaintenanceOff()]


def test_migrate_after_switch_puts_the_file_up_before_each_switch() -> None:
    config = _config(hosts=[{"host": "a"}, {"host": "b"}],
                     hooks={"migrate": ["wp core update-db"], "migrate_at": "after_switch",
                            "maintenance": True, "after_switch": ["wp cache flush"]})
    plan = plan_deploy("prod", config, _hosts("a", "b"), _manifest(), NEW)
    assert plan.migrate == ()
    assert _flat(plan.switch) == [("a", MaintenanceOn(NEW)), ("a", Switch(NEW)),
                                  ("b", MaintenanceOn(NEW)), ("b", Switch(NEW))]
    assert _flat(plan.after_switch) == [
        ("a", RunHooks("migrate", NEW, "r1", ("wp core update-db",))),
        ("a", MaintenanceOff()),
        ("a", RunHooks("after_switch", NEW, "r1", ("wp cache flush",))),
        ("b", MaintenanceOff()),
        ("b", RunHooks("after_switch", NEW, "r1", ("wp cache flush",)))]
    assert _flat(plan.undo)[:3] == [("a", MaintenanceOff("the run failed")),
                                    ("a", Switch("r1")), ("a", RefreshPhp("r1"))]


def test_a_maintenance_file_left_by_a_killed_run_is_removed_first() -> None:
    left = Observed("h", "r1", _live("r1"), ("r1",), maintenance=("r1",))
    plan = plan_deploy("prod", _config(), [left], _manifest(), NEW)
    steps = [s for _, s in _flat(plan.prepare)]
    assert steps[:2] == [MakeDirs(), MaintenanceOff("left by an earlier run")]
    back = Observed("h", "r2", _live("r1", "r2"), ("r1", "r2"), maintenance=("r1",))
    rb = plan_rollback("prod", _config(), [back], None)
    assert _flat(rb.cleanup) == [("h", MaintenanceOff("left by an earlier run"))]
    # Even when nothing else is to be done.
    again = plan_rollback("prod", _config(), [Observed("h", "r1", _live("r1"), ("r1",),
                                                       maintenance=("r1",))], "r1")
    assert again.already_live and again.cleanup


def test_rollback_with_database_restores_the_target_release_snapshot_after_the_switch() -> None:
    log = _live("r1", "r2", snapshot={"r1": "20260101T000000Z-aaaa1111",
                                      "r2": "20260102T000000Z-bbbb2222"})
    obs = [Observed("h", "r2", log, ("r1", "r2"))]
    plan = plan_rollback("prod", _config(backup=BACKUP), obs, None, with_database=True)
    assert plan.target == "r1"
    assert _flat(plan.database) == [("h", RestoreDatabase("20260101T000000Z-aaaa1111", "r1"))]
    assert "restore the live database from snapshot 20260101T000000Z-aaaa1111" in plan.render()
    assert plan.to_json()["hosts"][0]["database"][0]["op"] == "restore_database"
    assert plan_rollback("prod", _config(backup=BACKUP), obs, None).database == ()


def test_rollback_with_database_refuses_a_release_without_a_snapshot() -> None:
    obs = [Observed("h", "r2", _live("r1", "r2", snapshot={"r2": "s2"}), ("r1", "r2"))]
    with pytest.raises(UsageError, match="r1 carries no database snapshot"):
        plan_rollback("prod", _config(backup=BACKUP), obs, None, with_database=True)


def test_the_release_log_keeps_each_release_snapshot() -> None:
    log = ReleaseLog.parse(
        b'{"release": "r1", "state": "prepared", "time": "t"}\n'
        b'{"release": "r1", "state": "live", "time": "t", "snapshot": "20260101T000000Z-ab"}\n'
        b'{"release": "r2", "state": "live", "time": "t", "snapshot": "../../etc"}\n'
        b'{"release": "r1", "state": "live", "time": "t", "note": "rollback"}\n')
    assert log.snapshots == {"r1": "20260101T000000Z-ab"}  # a hostile id is ignored
    infos = {i.id: i for i in list_releases(log, ["r1", "r2"], "r1")}
    assert infos["r1"].to_json()["snapshot"] == "20260101T000000Z-ab"
    assert infos["r2"].snapshot is None
    line = log.events[1].to_line()
    assert ReleaseLog.parse(line).events[0].snapshot == "20260101T000000Z-ab"
    assert Record(NEW, "live") == Record(NEW, "live")  # records carry no snapshot: the run does
