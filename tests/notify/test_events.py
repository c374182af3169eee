"""The event vocabulary, the `events:` filter and the run's context (fast, no peers)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from forge_ci.notify import events
from forge_ci.notify.events import EVENTS, Event, Severity, github_context, selects

RUNNER = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_RUN_ID": "987654321",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
}


def test_the_documented_table_is_the_vocabulary() -> None:
    doc = events.__doc__ or ""
    rows = re.findall(r"^([a-z]+\.[a-z_]+)\s+(info|warning|error|critical)\s", doc, re.M)
    assert dict(rows) == {name: sev.value for name, sev in EVENTS.items()}


@pytest.mark.parametrize(
    ("selectors", "name", "chosen"),
    [
        ((), "deploy.failed", True),  # no filter: everything
        (("deploy.failed",), "deploy.failed", True),
        (("deploy.failed",), "deploy.succeeded", False),
        (("deploy",), "deploy.rolled_back", True),
        (("monitor",), "monitor.recovered", True),
        (("monitor",), "deploy.failed", False),
        (("backup.failed", "monitor"), "monitor.alert", True),
        (("backup.failed", "monitor"), "backup.succeeded", False),
        (("rollback",), "deploy.rolled_back", False),  # a group is the part before the dot
    ],
)
def test_filter_takes_names_and_groups(selectors: tuple[str, ...], name: str,
                                       chosen: bool) -> None:
    assert selects(selectors, name) is chosen


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown event 'deploy\.faild'.*deploy\.failed"):
        events.check_selector("deploy.faild")
    with pytest.raises(ValueError, match="group, not an event"):
        Event.create("monitor", environment="prod", summary="x", environ={})


def test_run_url_actor_and_commit_come_from_the_environ_given() -> None:
    ctx = github_context(RUNNER)
    assert ctx.run_url == "https://github.com/acme/shop/actions/runs/987654321"
    assert (ctx.actor, ctx.commit) == ("octocat", RUNNER["GITHUB_SHA"])
    again = github_context({**RUNNER, "GITHUB_RUN_ATTEMPT": "2"})
    assert again.run_url == "https://github.com/acme/shop/actions/runs/987654321/attempts/2"
    assert github_context({}).run_url is None  # outside Actions: no link, not a broken one


def test_event_fills_context_and_default_severity() -> None:
    event = Event.create(
        "deploy.failed", environment="production", summary="health check\nfailed on web1",
        environ=RUNNER, project="shop", release="20261206-1015", previous_release="20261205-0900",
        details={"build_s": 41.5, "hosts": 2}, time=datetime(2026, 12, 6, 10, 15, tzinfo=UTC),
    )
    assert event.severity is Severity.ERROR
    assert event.summary == "health check failed on web1"  # one line
    assert event.title == "[production] deploy.failed: health check failed on web1"
    assert event.to_dict() == {
        "version": 1, "event": "deploy.failed", "severity": "error",
        "environment": "production", "project": "shop",
        "summary": "health check failed on web1", "release": "20261206-1015",
        "previous_release": "20261205-0900", "commit": RUNNER["GITHUB_SHA"],
        "actor": "octocat", "run_url": "https://github.com/acme/shop/actions/runs/987654321",
        "time": "2026-12-06T10:15:00Z", "details": {"build_s": 41.5, "hosts": 2},
    }
    assert ("Release", "20261206-1015") in event.facts()
    assert ("build_s", "41.5") in event.facts()


def test_explicit_fields_win_over_the_environ() -> None:
    event = Event.create("monitor.alert", environment="staging", summary="TLS expires in 3 days",
                         environ=RUNNER, severity=Severity.CRITICAL, actor="schedule")
    assert (event.severity, event.actor) == (Severity.CRITICAL, "schedule")


def test_details_are_small_plain_facts() -> None:
    with pytest.raises(ValueError, match="at most 20"):
        Event.create("backup.failed", environment="p", summary="x", environ={},
                     details={f"k{i}": i for i in range(21)})
    with pytest.raises(ValueError, match="'nested' must be"):
        Event.create("backup.failed", environment="p", summary="x", environ={},
                     details={"nested": {"a": 1}})  # type: ignore[dict-item]
