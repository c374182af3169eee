"""kill -9 of forge, and sshd dropping the connection, at every phase of deploy and
rollback; runs killed at random moments; a full disk on the target. After each: a
good release serves, whole, the lock is free, and the next plain deploy works."""

from __future__ import annotations

import os
import random
import time

import pytest
from lab.killable import Phase, Run

from forge_ci.errors import ExitCode

from .deploysite import DeploySite

pytestmark = [pytest.mark.faults, pytest.mark.lab]

DEPLOY = [
    # The target is observed in the lock's round trip: one phase.
    Phase("lock-and-observe", ": taking the deploy lock", ": locked", "old"),
    Phase("ship", ": shipping ", ": linking shared paths", "old"),
    Phase("transfer", "(a partial file on the target)", ": linking shared paths", "old"),
    Phase("prepare", ": linking shared paths", "preview: checking", "old"),
    Phase("preview", "preview: checking", ": switching current", "old"),
    Phase("switch", ": switching current", "health: checking", "either"),
    Phase("php-refresh", "(the reload command started)", "health: checking", "new"),
    Phase("health", "health: checking", ": recording", "new"),
    Phase("finish", ": recording", " is live on production", "new"),
]

# Rollback takes the lock and observes the hosts with deploy's code: its own phases.
ROLLBACK = [
    Phase("switch", ": switching current", "health: checking", "either"),
    Phase("health", "health: checking", ": recording", "new"),
    Phase("record", ": recording", " is live on production", "new"),
]

BIG = "web/app/media.bin"


def _expect(phase: Phase, old: str, new: str) -> set[str]:
    return {"old": {old}, "new": {new}, "either": {old, new}}[phase.serves]


def _reach(site: DeploySite, run: Run, phase: Phase) -> None:
    """Wait until the run is inside ``phase``."""
    if phase.name == "transfer":
        deadline = time.monotonic() + 60
        while not any(0 < p.stat().st_size < 16 << 20
                      for p in (site.path / "releases").glob(f"*/{BIG}")):
            assert run.running() and time.monotonic() < deadline, run.output
            time.sleep(0.002)
    elif phase.name == "php-refresh":
        deadline = time.monotonic() + 60
        while not site.reload_sentinel.exists():
            assert run.running() and time.monotonic() < deadline, run.output
            time.sleep(0.002)
    else:
        run.wait_for(phase.starts)


def _arrange(site: DeploySite, phase: Phase) -> None:
    site.reload_sentinel.unlink(missing_ok=True)
    if phase.name in ("preview", "health"):
        site.config(slow_health=True)
    if phase.name == "transfer":
        (site.ssh.src / BIG).write_bytes(os.urandom(16 << 20))
    if phase.name == "php-refresh":
        command = f"touch {site.reload_sentinel} && {site.ssh.site.reload_command}"
        quoted = "'" + command.replace("'", "''") + "'"
        site.config(f"    php: {{ refresh: command, reload_command: {quoted} }}\n")


def _restore(site: DeploySite) -> None:
    (site.ssh.src / BIG).unlink(missing_ok=True)
    site.config()


@pytest.mark.parametrize("phase", DEPLOY, ids=str)
def test_kill_9_during_deploy(site: DeploySite, phase: Phase) -> None:
    old = site.served()
    _arrange(site, phase)
    new = site.new_version()
    run = site.spawn("deploy", "production")
    _reach(site, run, phase)
    run.kill()
    assert phase.then not in run.output, f"killed too late, after {phase}:\n{run.output}"
    site.assert_good(_expect(phase, old, new))
    _restore(site)
    site.deploy()
    site.assert_tidy()


@pytest.mark.parametrize("phase", ROLLBACK, ids=str)
def test_kill_9_during_rollback(site: DeploySite, phase: Phase) -> None:
    old = site.served()
    target = _rollback_target(site)
    _arrange(site, phase)
    run = site.spawn("rollback", "production")
    _reach(site, run, phase)
    run.kill()
    assert phase.then not in run.output, f"killed too late, after {phase}:\n{run.output}"
    site.assert_good(_expect(phase, old, target))
    _restore(site)
    site.deploy()
    site.assert_tidy()


# (phase, exit code, what serves): the exit code must say what happened to the site.
# (Cut mid-transfer: tests/deploy/test_ssh_wordpress.py.)
CUTS = [
    ("deploy", "switch", ExitCode.ROLLBACK_FAILED, "either"),
    ("deploy", "finish", ExitCode.OK, "new"),
    ("rollback", "record", ExitCode.OK, "new"),
]


@pytest.mark.parametrize(("command", "name", "code", "serves"), CUTS,
                         ids=[f"{c}-{n}" for c, n, _, _ in CUTS])
def test_connection_dropped_during_deploy_and_rollback(
        site: DeploySite, command: str, name: str, code: int, serves: str) -> None:
    phase = next(p for p in (DEPLOY if command == "deploy" else ROLLBACK) if p.name == name)
    old = site.served()
    _arrange(site, phase)
    new = site.new_version() if command == "deploy" else _rollback_target(site)
    run = site.spawn(command, "production")
    _reach(site, run, phase)
    site.proxy.kill_connections()
    assert run.wait() == code, run.output
    site.assert_good({"old": {old}, "new": {new}, "either": {old, new}}[serves])
    assert "Traceback" not in run.output
    _restore(site)
    site.deploy()
    site.assert_tidy()


def test_kill_9_at_random_moments_then_a_normal_deploy(
        site: DeploySite, rng: random.Random) -> None:
    """Kills anywhere in deploy or rollback, build and connect included, at moments
    drawn from the measured length of a normal run of each."""
    took = {}
    for command in ("deploy", "rollback"):
        if command == "deploy":
            site.new_version()
        run = site.spawn(command, "production")
        assert run.wait() == 0, run.output
        took[command] = time.monotonic() - run.started
    for _ in range(3):
        command = rng.choice(("deploy", "rollback"))
        old = site.served()
        new = site.new_version() if command == "deploy" else _rollback_target(site)
        delay = rng.uniform(0, took[command])
        run = site.spawn(command, "production")
        time.sleep(max(0.0, delay - (time.monotonic() - run.started)))
        run.kill()
        print(f"{command} killed at {run.killed_at:.3f}s of {took[command]:.3f}s")
        site.assert_good({old, new})
        site.deploy()
        site.assert_tidy()


@pytest.mark.parametrize("free", [1 << 20, 0], ids=["no-room-for-the-release", "full"])
def test_full_disk_on_the_target(site: DeploySite, free: int) -> None:
    old = site.served()
    (site.ssh.src / BIG).write_bytes(os.urandom(4 << 20))
    site.new_version()
    ballast = site.fill_disk(free)
    try:
        rc, _ = site.forge("deploy", "production")
        assert rc == ExitCode.FAILED
        site.assert_good({old})
    finally:
        ballast.unlink()
    _restore(site)
    site.deploy()
    site.assert_tidy()


def _rollback_target(site: DeploySite) -> str:
    """The version ``forge-ci rollback`` would bring back."""
    rc, plan = site.forge("rollback", "production", "--dry-run", "--json")
    assert rc == 0
    version = site.path / "releases" / plan["target"] / "web/app/themes/forge-example/version.txt"
    return version.read_text().strip()
