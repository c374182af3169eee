"""Oracle: our retention keeps exactly what ``restic forget`` keeps.

One restic repository (tiny data, module-scoped) gets snapshots at a seeded spread
of times - same hour, same day, ISO week 1 across New Year, both DST changes in
Europe/Berlin, many months and years apart. For fixed and generated policies,
``restic forget --dry-run --json`` and :func:`apply_policy` must keep the same set.
restic parses ``--time`` in its TZ and buckets by the recorded offset, which is the
wall clock of Europe/Berlin: our policy uses that zone. The times we feed our side
are those restic recorded (read back with ``restic snapshots --json``), so DST
gaps and ambiguous hours cannot make the two sides disagree about the input.

Before 0.16 restic did not keep the oldest snapshot when counts were left over;
the installed version decides which behaviour we compare.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from forge_ci.backup.retention import Candidate, apply_policy
from forge_ci.config.backup import Retention

RESTIC = shutil.which("restic")
pytestmark = pytest.mark.skipif(RESTIC is None and not os.environ.get("CI"),
                                reason="restic not installed")
ZONE = "Europe/Berlin"
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _times() -> list[str]:
    rng = random.Random(20240101)
    fixed = [
        "2024-01-01 00:10:00", "2024-01-01 00:40:00", "2024-01-01 01:05:00",  # same hour
        "2024-01-01 23:59:00", "2023-12-31 23:30:00", "2023-12-29 12:00:00",  # new year
        "2024-12-29 12:00:00", "2024-12-30 09:00:00", "2025-01-05 18:00:00",  # ISO W01
        "2024-03-31 01:30:00", "2024-03-31 03:30:00",  # spring forward
        "2024-10-27 01:30:00", "2024-10-27 02:30:00", "2024-10-27 03:30:00",  # fall back
    ]
    start = datetime(2021, 6, 1)
    spread = [start + timedelta(minutes=rng.randrange(0, 4 * 365 * 24 * 60)) for _ in range(12)]
    out = fixed + [t.strftime("%Y-%m-%d %H:%M:00") for t in spread]
    assert len(set(out)) == len(out)
    return out


def _restic(repo: Path, *args: str) -> str:
    assert RESTIC is not None
    env = {"RESTIC_PASSWORD": "oracle", "RESTIC_REPOSITORY": str(repo), "TZ": ZONE,
           "PATH": os.environ.get("PATH", ""), "HOME": str(repo.parent),
           "RESTIC_CACHE_DIR": str(repo.parent / "cache")}
    done = subprocess.run([RESTIC, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _version(repo: Path) -> tuple[int, int]:
    m = re.search(r"restic (\d+)\.(\d+)", _restic(repo, "version"))
    assert m
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("restic")
    repo = base / "repo"
    data = base / "data"
    data.mkdir()
    (data / "f").write_text("tiny\n")
    _restic(repo, "init")
    # Concurrent backups share the repository (non-exclusive locks); scrypt dominates.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(lambda t: _restic(repo, "backup", "-q", "--host", "oracle",
                                        "--time", t, str(data)), _times()))
    yield repo


@pytest.fixture(scope="module")
def candidates(repo: Path) -> list[Candidate]:
    snaps = json.loads(_restic(repo, "--no-lock", "snapshots", "--json"))
    assert len(snaps) == len(_times())
    return [Candidate(s["id"], datetime.fromisoformat(s["time"])) for s in snaps]


def restic_kept(repo: Path, counts: dict[str, int]) -> set[str]:
    flags = [a for rule, n in counts.items() if n for a in (f"--keep-{rule}", str(n))]
    groups = json.loads(_restic(repo, "--no-lock", "forget", "--dry-run", "--json", *flags))
    assert len(groups) == 1
    return {s["id"] for s in groups[0]["keep"] or []}


def ours_kept(candidates: list[Candidate], counts: dict[str, int],
              keep_oldest: bool) -> set[str]:
    policy = Retention(**{f"keep_{k}": v for k, v in counts.items() if v}, timezone=ZONE)
    return {d.id for d in apply_policy(candidates, policy, keep_oldest=keep_oldest) if d.keep}


FIXED = [
    {"last": 3}, {"hourly": 4}, {"daily": 5}, {"weekly": 6}, {"monthly": 7}, {"yearly": 3},
    {"last": 2, "daily": 3, "weekly": 2, "monthly": 4, "yearly": 10},
    {"hourly": 30, "daily": 30, "weekly": 30, "monthly": 30, "yearly": 30},
    {"last": 1, "yearly": 1}, {"weekly": 2, "monthly": 1},
]


def _generated(n: int) -> list[dict[str, int]]:
    rng = random.Random(7)
    out: list[dict[str, int]] = []
    while len(out) < n:
        counts = {r: rng.choice([0, 0, 1, 2, 3, 5, 8]) for r in RULES}
        if any(counts.values()):
            out.append(counts)
    return out


def test_policies_match_restic(repo: Path, candidates: list[Candidate]) -> None:
    keep_oldest = _version(repo) >= (0, 16)
    policies = FIXED + _generated(16)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        theirs = list(pool.map(lambda c: restic_kept(repo, c), policies))
    mismatches = [(c, sorted(ours_kept(candidates, c, keep_oldest) ^ t))
                  for c, t in zip(policies, theirs, strict=True)
                  if ours_kept(candidates, c, keep_oldest) != t]
    assert not mismatches, mismatches
    # The spread is worth something: policies do forget, and not all the same way.
    assert any(len(t) < len(candidates) for t in theirs)
    assert len({frozenset(t) for t in theirs}) > len(policies) // 2
