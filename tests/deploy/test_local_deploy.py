"""Deploys to the local target, checked the way a user would look at the result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_ci.errors import ExitCode
from tests.deploy.conftest import LocalSite


def releases(site: LocalSite) -> list[dict[str, object]]:
    log = (site.target / ".forge/log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in log]


def releases_on_disk(site: LocalSite) -> list[str]:
    # Dot-entries are forge's staged copies for the next deploy, not releases.
    return [d for d in os.listdir(site.target / "releases") if not d.startswith(".")]


def state(site: LocalSite, rid: str) -> str:
    return [e["state"] for e in releases(site) if e["release"] == rid][-1]  # type: ignore[return-value]


def test_redeploy_links_unchanged_files_and_leaves_the_live_release_untouched(
    local_site: LocalSite,
) -> None:
    local_site.write("web/big.bin", "x" * 100_000)
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    second = local_site.current
    assert second != first
    old, new = local_site.target / "releases" / first, local_site.target / "releases" / second
    assert (old / "web/index.html").read_text() == "ok v1\n"
    assert (new / "web/index.html").read_text() == "ok v2\n"
    assert (old / "web/big.bin").stat().st_ino == (new / "web/big.bin").stat().st_ino
    assert state(local_site, second) == "live"
    assert os.readlink(local_site.target / "current") == f"releases/{second}"


@pytest.mark.parametrize("damage", [b"", b'{"version": 1, "files": {"web/ind', b"\0" * 4096])
def test_a_stored_manifest_cut_short_by_a_crash_costs_a_full_send_not_a_wrong_release(
    local_site: LocalSite, damage: bytes,
) -> None:
    # The stored manifest is written without a sync: after a crash it may be empty,
    # short or zeros. The next deploy sends everything and serves the right files.
    local_site.write("web/big.bin", "x" * 100_000)
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    (local_site.target / ".forge/manifests" / f"{first}.json").write_bytes(damage)
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    second = local_site.current
    old, new = local_site.target / "releases" / first, local_site.target / "releases" / second
    assert (new / "web/index.html").read_text() == "ok v2\n"
    assert (new / "web/big.bin").read_text() == "x" * 100_000
    assert (old / "web/big.bin").stat().st_ino != (new / "web/big.bin").stat().st_ino  # sent
    live = [e for e in releases(local_site) if e["state"] == "live"][-1]
    assert live["metrics"]["linked_entries"] == 0  # type: ignore[index]


def test_a_stored_manifest_that_is_not_the_releases_own_costs_a_full_send(
    local_site: LocalSite,
) -> None:
    # A stored manifest that parses but does not describe its release (here it claims
    # the live index.html is already the next one) must not be trusted: the release
    # id names its manifest's digest, and the next deploy checks it.
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    stored = local_site.target / ".forge/manifests" / f"{first}.json"
    raw = json.loads(stored.read_bytes())
    raw["files"]["web/index.html"].update(
        size=6, sha256=hashlib.sha256(b"ok v2\n").hexdigest())
    stored.write_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    assert local_site.page() == "ok v2\n"


def test_each_release_stores_its_own_manifest_and_the_next_sends_only_changes(
    local_site: LocalSite,
) -> None:
    # After the first, each manifest is written as an edit of the live one's.
    for v in range(3):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        rid = local_site.current
        stored = (local_site.target / ".forge/manifests" / f"{rid}.json").read_bytes()
        assert hashlib.sha256(stored).hexdigest()[:8] == rid.split("-")[1]
        assert local_site.page() == f"ok v{v}\n"
    live = [e for e in releases(local_site) if e["state"] == "live"][-1]
    assert live["metrics"]["sent_entries"] == 1  # type: ignore[index]
    assert live["metrics"]["linked_entries"] > 0  # type: ignore[index]


def test_unhealthy_release_is_rolled_back_with_its_own_exit_code(local_site: LocalSite) -> None:
    assert local_site.forge("deploy", "local") == 0
    good = local_site.current
    local_site.write("web/index.html", "error 500\n")
    assert local_site.forge("deploy", "local") == ExitCode.ROLLED_BACK
    assert local_site.current == good
    assert local_site.page() == "ok v1\n"
    bad = [e["release"] for e in releases(local_site) if e["state"] == "bad"]
    assert len(bad) == 1 and bad[0] != good


def test_failing_before_switch_hook_leaves_the_site_untouched(local_site: LocalSite) -> None:
    assert local_site.forge("deploy", "local") == 0
    good = local_site.current
    local_site.config(extra="    hooks: {before_switch: ['echo migrating; exit 7']}\n")
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    assert local_site.current == good and local_site.page() == "ok v1\n"


def test_a_step_failing_in_the_switchs_round_trip_is_a_failure_before_the_switch(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str],
) -> None:
    # The last prepare steps (shared links, the "prepared" event) run in the same
    # round trip as the switch, before it: when one fails, nothing was switched.
    assert local_site.forge("deploy", "local") == 0
    good = local_site.current
    shared = local_site.target / "shared/web"
    shutil.rmtree(shared)
    shared.write_text("a file where shared/web/app/uploads needs a directory\n")
    local_site.write("web/index.html", "ok v2\n")
    capsys.readouterr()
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "linking shared paths" in err and "the live site was not touched" in err
    assert local_site.current == good and local_site.page() == "ok v1\n"
    failed = [e for e in releases(local_site) if e["release"] != good]
    assert [e["state"] for e in failed] == ["preparing", "bad", "removed"]
    assert releases_on_disk(local_site) == [good]


def _staged_copy_made(site: LocalSite, release: str) -> Path:
    staged = site.target / "releases" / f".forge-base-{release}"
    deadline = time.monotonic() + 20
    while not staged.is_dir():  # made in the background after the deploy
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return staged


def test_a_step_failing_in_the_shippings_round_trip_is_named_and_nothing_is_switched(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str],
) -> None:
    # A redeploy's first prepare steps (directories, the "preparing" event, the
    # manifest) run in the stream's own round trip, before the release is made:
    # one that fails is named as alone, and the release is never made.
    assert local_site.forge("deploy", "local") == 0
    good = local_site.current
    _staged_copy_made(local_site, good)
    log = local_site.target / ".forge/log.jsonl"
    log.unlink()
    log.mkdir()  # the event cannot be appended
    local_site.write("web/index.html", "ok v2\n")
    capsys.readouterr()
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert f"appending to {log}" in err and "the live site was not touched" in err
    assert local_site.current == good and local_site.page() == "ok v1\n"
    assert releases_on_disk(local_site) == [good]


def test_a_redeploy_that_removes_many_files_unlinks_them_all_from_the_new_release_only(
    local_site: LocalSite,
) -> None:
    # Over 16 kB of names to unlink: they go on the linking command's stdin, not in it.
    names = [f"web/old/{'n' * 60}-{i:04d}.txt" for i in range(400)]
    for name in names:
        local_site.write(name, "old\n")
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    shutil.rmtree(local_site.src / "web/old")
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    second = local_site.current
    old, new = local_site.target / "releases" / first, local_site.target / "releases" / second
    assert all((old / n).read_text() == "old\n" for n in names)
    assert not (new / "web/old").exists()
    assert local_site.page() == "ok v2\n"


def test_first_deploy_that_fails_health_leaves_no_current(local_site: LocalSite) -> None:
    local_site.write("web/index.html", "error 500\n")
    assert local_site.forge("deploy", "local") == ExitCode.ROLLED_BACK
    assert not (local_site.target / "current").exists()


def test_dry_run_changes_nothing(local_site: LocalSite, capsys: pytest.CaptureFixture[str]) -> None:
    assert local_site.forge("deploy", "local", "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    ship = next(s for s in plan["hosts"][0]["prepare"] if s["op"] == "ship")
    assert ship["send"] >= 1
    assert sorted(p.name for p in local_site.target.iterdir()) == []


def test_env_file_is_private_and_shared_paths_are_links(local_site: LocalSite) -> None:
    local_site.config(extra="    dotenv: {DB_PASSWORD: 'p\"a$s\\w'}\n")
    assert local_site.forge("deploy", "local") == 0
    env = local_site.target / "current/.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert 'DB_PASSWORD="p\\"a\\$s\\\\w"' in env.read_text()
    uploads = local_site.target / "current/web/app/uploads"
    assert uploads.is_symlink() and not os.readlink(uploads).startswith("/")
    (uploads / "photo.jpg").write_text("img")
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    assert (local_site.target / "current/web/app/uploads/photo.jpg").read_text() == "img"


def test_manual_rollback_and_rollback_to(local_site: LocalSite) -> None:
    ids = []
    for v in ("1", "2", "3"):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        ids.append(local_site.current)
    assert local_site.forge("rollback", "local") == 0
    # A manual rollback says nothing bad about the release it leaves.
    assert local_site.current == ids[1] and state(local_site, ids[2]) == "rolled_back"
    assert local_site.forge("rollback", "local", "--to", ids[0]) == 0
    assert local_site.page() == "ok v1\n"
    assert local_site.forge("rollback", "local", "--to", "nope") == ExitCode.USAGE


def test_keep_releases_prunes_but_never_current_or_last_good(local_site: LocalSite) -> None:
    local_site.config(extra="    keep_releases: 2\n")
    ids = []
    for v in range(4):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        ids.append(local_site.current)
    assert sorted(releases_on_disk(local_site)) == sorted(ids[-2:])
    # Pruned releases are renamed away at once and deleted in the background with
    # their manifests: the space comes back without the run waiting for it.
    deadline = time.monotonic() + 30
    while any(n.startswith(".forge-trash-") for n in os.listdir(local_site.target / "releases")) \
            or len(os.listdir(local_site.target / ".forge/manifests")) > 2:
        assert time.monotonic() < deadline, "the pruned releases were never deleted"
        time.sleep(0.05)
    assert sorted(p.stem for p in (local_site.target / ".forge/manifests").iterdir()) == sorted(
        ids[-2:])


def _forge_process(site: LocalSite) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forge_ci",
            "deploy",
            "local",
            "--config",
            str(site.src / "forge.yml"),
        ],
        env=dict(site.env, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_live_lock_is_refused_and_a_killed_owner_frees_it(local_site: LocalSite) -> None:
    assert local_site.forge("deploy", "local") == 0
    good = local_site.current
    marker = local_site.target.parent / "hook-started"
    local_site.config(extra=f"    hooks: {{before_switch: ['touch {marker}; sleep 60']}}\n")
    local_site.write("web/index.html", "ok v2\n")
    proc = _forge_process(local_site)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert local_site.forge("deploy", "local") == ExitCode.FAILED  # locked
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert local_site.current == good and local_site.page() == "ok v1\n"
    local_site.config()
    assert local_site.forge("deploy", "local") == 0
    assert local_site.page() == "ok v2\n"
    dirs = releases_on_disk(local_site)
    assert len(dirs) == 2  # the killed run's half release was removed


def test_next_deploy_starts_from_a_staged_copy_and_stale_copies_go(local_site: LocalSite) -> None:
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    staged = local_site.target / "releases" / f".forge-base-{first}"
    deadline = time.monotonic() + 20
    while not staged.is_dir():  # made in the background after the deploy
        assert time.monotonic() < deadline
        time.sleep(0.05)
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    assert not staged.exists()  # it became the new release
    second = local_site.current
    old, new = local_site.target / "releases" / first, local_site.target / "releases" / second
    assert (old / "web/index.html").read_text() == "ok v1\n"
    assert (new / "web/index.html").read_text() == "ok v2\n"
    assert local_site.forge("rollback", "local") == 0
    local_site.write("web/index.html", "ok v3\n")
    assert local_site.forge("deploy", "local") == 0
    assert not (local_site.target / "releases" / f".forge-base-{second}").exists()


def test_failed_deploy_writes_a_summary_that_says_what_happened(
        local_site: LocalSite, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    local_site.env["GITHUB_STEP_SUMMARY"] = str(summary)
    assert local_site.forge("deploy", "local") == 0
    local_site.write("web/index.html", "error 500\n")
    assert local_site.forge("deploy", "local") == ExitCode.ROLLED_BACK
    text = summary.read_text()
    assert "rolled back: the previous release is live" in text
    assert "| local | failed and rolled back" in text


def test_kill_9_mid_rollback_leaves_a_good_release_and_the_next_deploy_works(
        local_site: LocalSite) -> None:
    for v in ("1", "2"):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
    marker = local_site.target.parent / "refresh-started"
    local_site.config(extra="    php: { refresh: command, reload_command: "
                            f"'touch {marker}; sleep 60' }}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "forge_ci", "rollback", "local",
         "--config", str(local_site.src / "forge.yml")],
        env=dict(local_site.env, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    # Killed between the switch and its record: a release that was live before serves.
    assert local_site.page() in ("ok v1\n", "ok v2\n")
    local_site.config()
    local_site.write("web/index.html", "ok v3\n")
    assert local_site.forge("deploy", "local") == 0
    assert local_site.page() == "ok v3\n"
    assert local_site.forge("rollback", "local") == 0
    assert local_site.page() in ("ok v1\n", "ok v2\n")


def test_a_release_never_inherits_the_previous_marker(local_site: LocalSite) -> None:
    # With the marker on, the release carries its own; turned off, the next release
    # must not keep the old one (it would claim to be that release).
    local_site.config()
    cfg = (local_site.src / "forge.yml").read_text()
    (local_site.src / "forge.yml").write_text(cfg.replace("marker: false", "marker: true"))
    assert local_site.forge("deploy", "local") == 0
    first = local_site.current
    assert (local_site.target / "releases" / first / "web/forge-release.php").exists()
    local_site.config()  # marker: false
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    assert local_site.current != first
    assert not (local_site.target / "current/web/forge-release.php").exists()


def test_a_non_utf8_file_name_is_refused_at_build_before_the_target_is_touched(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    (local_site.src / os.fsdecode(b"web/caf\xe9.jpg")).write_bytes(b"x")
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "caf\\xe9.jpg" in err and "not valid UTF-8" in err and "Traceback" not in err
    assert not (local_site.target / "releases").exists()


def _listing(site: LocalSite, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert site.forge("releases", "local", "--json") == 0
    return json.loads(capsys.readouterr().out)["releases"]  # type: ignore[no-any-return]


def test_release_history_says_who_deployed_what_and_rolling_back_and_forth_keeps_it_good(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for v, actor in (("1", "alice"), ("2", "bob")):
        local_site.env.update(GITHUB_ACTOR=actor, GITHUB_SHA=f"{v}" * 40, GITHUB_RUN_ID=v)
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        ids.append(local_site.current)
    listing = _listing(local_site, capsys)
    # Oldest first, as every listing.
    assert [(r["id"], r["state"], r["actor"], r["commit"], r["run"]) for r in listing] == [
        (ids[0], "previous", "alice", "1" * 40, "1"), (ids[1], "live", "bob", "2" * 40, "2")]
    assert all(isinstance(r["seconds"], float) and r["time"] for r in listing)

    # Back, then forward: every release stays good, and a rollback can go to either.
    assert local_site.forge("rollback", "local") == 0
    assert [r["state"] for r in _listing(local_site, capsys)] == ["live", "rolled_back"]
    assert local_site.forge("rollback", "local", "--to", ids[1]) == 0
    assert [r["state"] for r in _listing(local_site, capsys)] == ["rolled_back", "live"]
    assert local_site.page() == "ok v2\n"

    # The human listing: one header, the columns in the documented order.
    assert local_site.forge("releases", "local") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["release", "state", "commit", "subject", "actor",
                                "time", "took", "snapshot"]
    assert lines[2].startswith(f"* {ids[1]}  live") and "bob" in lines[2]


def test_forced_rollback_switches_a_site_whose_checks_fail_for_another_reason(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for v in ("1", "2"):
        local_site.write("web/index.html", f"ok v{v}\n")
        assert local_site.forge("deploy", "local") == 0
        ids.append(local_site.current)
    first, second = ids
    # The site is down for a reason no release fixes (here: its check page is gone).
    local_site.config(health=f"      - {{url: '{local_site.url}/db-status.html'}}\n")
    assert local_site.forge("rollback", "local") == ExitCode.FAILED
    assert local_site.current == second
    capsys.readouterr()
    summary = local_site.target.parent / "summary.md"
    local_site.env["GITHUB_STEP_SUMMARY"] = str(summary)
    assert local_site.forge("rollback", "local", "--force") == 0
    err = capsys.readouterr().err
    assert local_site.current == first and local_site.page() == "ok v1\n"
    assert "rollback --force" in err and "WITHOUT health checks" in err
    assert "Forced rollback" in summary.read_text()
    forced = [e for e in releases(local_site) if "forced" in str(e.get("note"))]
    assert [(e["release"], e["state"]) for e in forced] == [
        (second, "rolled_back"), (first, "live")]


def test_a_first_deploy_onto_an_existing_site_moves_its_uploads_only_when_asked(
    local_site: LocalSite, capsys: pytest.CaptureFixture[str]
) -> None:
    # A site forge did not deploy lives in the path, media and all.
    old = local_site.target
    (old / "web/app/uploads/2024").mkdir(parents=True)
    (old / "web/index.php").write_text("old site\n")
    (old / "web/app/uploads/2024/photo.jpg").write_bytes(b"\xff\xd8 jpeg")

    capsys.readouterr()
    assert local_site.forge("deploy", "local") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "holds a site forge did not deploy" in err and "--adopt" in err
    assert not (old / "current").exists() and not (old / "releases").exists()

    assert local_site.forge("deploy", "local", "--adopt", "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    [host] = plan["hosts"]
    assert {"op": "adopt", "paths": ["web/app/uploads"]} in host["prepare"]
    assert (old / "web/app/uploads/2024/photo.jpg").is_file()  # the dry run moved nothing
    assert not (old / "shared").exists()

    assert local_site.forge("deploy", "local", "--adopt") == 0
    assert (old / "shared/web/app/uploads/2024/photo.jpg").read_bytes() == b"\xff\xd8 jpeg"
    # The new release serves the media, and the old site's path still reaches them.
    assert (old / "current/web/app/uploads/2024/photo.jpg").read_bytes() == b"\xff\xd8 jpeg"
    assert os.readlink(old / "web/app/uploads") == "../../shared/web/app/uploads"
    assert (old / "web/app/uploads/2024/photo.jpg").is_file()
    # The next deploy has nothing to adopt and needs no flag.
    local_site.write("web/index.html", "ok v2\n")
    assert local_site.forge("deploy", "local") == 0
    assert local_site.page() == "ok v2\n"
