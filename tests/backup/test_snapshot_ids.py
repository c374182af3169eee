"""Snapshot ids sort by the second; two backups in one second must still sort in the
order they were taken, or "latest" would name the older one."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from forge_ci.backup import layout

NOW = datetime(2026, 12, 6, 21, 45, 17, tzinfo=UTC)


@given(st.integers(min_value=1, max_value=500))
def test_ids_of_one_second_sort_in_the_order_they_were_made(n: int) -> None:
    ids = [layout.new_snapshot_id(NOW)]
    for _ in range(n):
        ids.append(layout.new_snapshot_id(NOW, taken=ids))
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(layout.is_snapshot_id(i) for i in ids)


def test_only_ids_of_the_same_second_bind_the_tail() -> None:
    first = layout.new_snapshot_id(NOW)
    # A future-dated name (junk, or a forgery "newer than every real one") and an older
    # second do not matter; the id of the same second does.
    taken = [first, "20261206T215017Z-00000001", "20261206T214516Z-ffffffff", "not-an-id"]
    new = layout.new_snapshot_id(NOW, taken=taken)
    assert new.startswith("20261206T214517Z-") and new > first
