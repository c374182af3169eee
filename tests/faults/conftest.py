"""The fault suite: forge killed (SIGKILL) or cut off (connections dropped, S3 failing
parts, a full disk) at every phase of deploy, rollback, backup and restore, then
checked the way a user would check: the site serves a good release, no snapshot is
lost or half-written, the next plain run succeeds.

Phases are hit by watching forge's own output for the line that starts them
(``killable.Run.wait_for``). A module shares one site: every test leaves it as a
normal run does, so the next one starts from a good state.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from lab.mariadb import MariaDB

from .deploysite import DeploySite, deploy_site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="module")
def site(mariadb_server: MariaDB) -> Iterator[DeploySite]:
    """One deploy site per module, with a good release live."""
    with deploy_site(mariadb_server) as s:
        yield s


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Seeded randomness; the seed is printed so a failure can be replayed with
    FORGE_FAULT_SEED=<seed>."""
    seed = int(os.environ.get("FORGE_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request.node.nodeid}: FORGE_FAULT_SEED={seed}")
    return random.Random(seed)
