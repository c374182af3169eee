"""restic's forget rules as a pure function: hand-checked cases (the oracle test
compares many more against the real restic binary)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_ci.backup.retention import PROTECTED, Candidate, apply_policy, describe
from forge_ci.config.backup import Retention


def snaps(*times: str, tz: str = "UTC") -> list[Candidate]:
    zone = ZoneInfo(tz)
    return [Candidate(f"s{i}", datetime.fromisoformat(t).replace(tzinfo=zone))
            for i, t in enumerate(times)]


def kept(decisions: list) -> list[str]:  # type: ignore[type-arg]
    return [d.id for d in decisions if d.keep]


def test_empty_policy_is_refused_by_the_config() -> None:
    with pytest.raises(pydantic.ValidationError, match="empty retention policy"):
        Retention()
    with pytest.raises(pydantic.ValidationError, match="unknown time zone"):
        Retention(keep_last=1, timezone="Mars/Olympus")


def test_keep_last_and_newest_first() -> None:
    d = apply_policy(snaps("2024-01-01 10:00", "2024-01-03 10:00", "2024-01-02 10:00"),
                     Retention(keep_last=2))
    assert [x.id for x in d] == ["s1", "s2", "s0"]  # newest first
    assert kept(d) == ["s1", "s2"]
    assert d[0].reasons == ("last snapshot",)
    assert d[2].reasons == ()


def test_daily_keeps_newest_of_each_day() -> None:
    d = apply_policy(snaps("2024-01-01 09:00", "2024-01-01 18:00", "2024-01-02 08:00",
                           "2024-01-02 20:00"), Retention(keep_daily=5), keep_oldest=False)
    assert kept(d) == ["s3", "s1"]


def test_oldest_is_kept_while_counts_remain_like_restic_016() -> None:
    s = snaps("2024-01-01 09:00", "2024-01-01 18:00", "2024-01-02 08:00")
    d = apply_policy(s, Retention(keep_daily=5))
    assert kept(d) == ["s2", "s1", "s0"]
    assert d[-1].reasons == ("oldest daily snapshot",)
    # ...but not once the count is used up.
    assert kept(apply_policy(s, Retention(keep_daily=2))) == ["s2", "s1"]


def test_any_rule_keeps_and_all_reasons_are_recorded() -> None:
    d = apply_policy(snaps("2023-12-31 23:00", "2024-01-01 01:00"),
                     Retention(keep_last=1, keep_yearly=2), keep_oldest=False)
    assert d[0].reasons == ("last snapshot", "yearly snapshot")
    assert d[1].reasons == ("yearly snapshot",)


def test_buckets_are_cut_in_the_policy_time_zone() -> None:
    # 23:30 UTC and 00:30 UTC the next day are the same day in New York...
    s = [Candidate("a", datetime(2024, 3, 1, 23, 30, tzinfo=UTC)),
         Candidate("b", datetime(2024, 3, 2, 0, 30, tzinfo=UTC))]
    utc = apply_policy(s, Retention(keep_daily=5), keep_oldest=False)
    ny = apply_policy(s, Retention(keep_daily=5, timezone="America/New_York"),
                      keep_oldest=False)
    assert kept(utc) == ["b", "a"]
    assert kept(ny) == ["b"]


def test_iso_weeks_cross_the_year_like_go() -> None:
    # 2024-12-30 (Mon) and 2025-01-05 (Sun) are both ISO week 2025-W01.
    d = apply_policy(snaps("2024-12-29 12:00", "2024-12-30 12:00", "2025-01-05 12:00"),
                     Retention(keep_weekly=10), keep_oldest=False)
    assert kept(d) == ["s2", "s0"]


def test_hours_across_a_dst_change() -> None:
    # 2024-10-27 02:30 happens twice in Berlin; UTC instants one hour apart.
    base = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    s = [Candidate(f"h{i}", base + timedelta(hours=i)) for i in range(3)]
    d = apply_policy(s, Retention(keep_hourly=10, timezone="Europe/Berlin"),
                     keep_oldest=False)
    # Berlin wall clock: 02:30 (CEST), 02:30 (CET), 03:30 -> two distinct hours.
    assert kept(d) == ["h2", "h1"]


def test_protected_snapshot_is_kept_with_its_reason() -> None:
    d = apply_policy(snaps("2024-01-01", "2024-01-02", "2024-01-03"), Retention(keep_last=1),
                     protect=["s0"])
    assert kept(d) == ["s2", "s0"]
    assert d[-1].reasons == (PROTECTED,)


def test_ties_are_deterministic_and_naive_times_refused() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    d = apply_policy([Candidate("a", t), Candidate("b", t)], Retention(keep_last=1))
    assert kept(d)[0] == "b"
    with pytest.raises(ValueError, match="naive"):
        apply_policy([Candidate("x", datetime(2024, 1, 1))], Retention(keep_last=1))


def test_describe() -> None:
    assert describe(Retention(keep_last=7, keep_daily=14, timezone="Europe/Berlin")) == \
        "keep 7 last, 14 daily snapshots (Europe/Berlin)"


_instants = st.lists(st.integers(0, 3 * 365 * 24 * 3600), min_size=1, max_size=40, unique=True)
_counts = st.fixed_dictionaries({r: st.integers(0, 6) for r in
                                 ("last", "hourly", "daily", "weekly", "monthly", "yearly")}
                                ).filter(lambda c: any(c.values()))


def _policy(counts: dict[str, int], zone: str = "Europe/Berlin") -> Retention:
    return Retention(**{f"keep_{k}": v for k, v in counts.items() if v}, timezone=zone)


@settings(max_examples=150, deadline=None)
@given(_instants, _counts, st.sampled_from(["rule", "last"]), st.booleans())
def test_properties(instants: list[int], counts: dict[str, int], grow: str,
                    keep_oldest: bool) -> None:
    base = datetime(2022, 1, 1, tzinfo=UTC)
    cands = [Candidate(f"{i:03d}", base + timedelta(seconds=s)) for i, s in enumerate(instants)]
    decisions = apply_policy(cands, _policy(counts), keep_oldest=keep_oldest)
    kept_ids = {d.id for d in decisions if d.keep}
    # The newest snapshot is always kept; no rule keeps more than its count.
    assert decisions[0].keep
    for rule, n in counts.items():
        assert sum(f"{rule} snapshot" in d.reasons or f"oldest {rule} snapshot" in d.reasons
                   for d in decisions) <= n
    # keep_last alone keeps exactly the newest n.
    if grow == "last" and counts["last"]:
        only = apply_policy(cands, _policy({"last": counts["last"]}), keep_oldest=keep_oldest)
        assert [d.id for d in only if d.keep] == [d.id for d in decisions][:counts["last"]]
    # Raising any count never forgets a snapshot that was kept.
    for rule in counts:
        more = dict(counts, **{rule: counts[rule] + 1})
        grown = {d.id for d in apply_policy(cands, _policy(more), keep_oldest=keep_oldest)
                 if d.keep}
        assert kept_ids <= grown
