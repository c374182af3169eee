"""Fixtures that expose the lab: real sshd, WordPress stacks, MariaDB and S3
running as plain processes on 127.0.0.1 (see tests/lab).

A machine without the lab's binaries makes these fixtures FAIL, not skip:
CI must never pass by quietly not talking to real peers. Set
FORGE_LAB_ALLOW_SKIP=1 to skip them instead on a machine without the lab.

Tests using any of these fixtures, and the lab's own tests (tests/lab/test_*.py),
get the `lab` marker automatically, so `pytest -m "not lab"` runs only the fast tests.

Tests live by capability, mirroring the package (the test of forge_ci/x/y.py is under
tests/x/); what kind of test it is, is a marker:

- `lab`: real peers from tests/lab;
- `e2e`: the actions and workflows run by act, as a site repository would
  (tests/actions/test_act.py);
- `faults`: forge killed (SIGKILL) or cut off at every phase of deploy, rollback,
  backup and restore, then checked the way a user would check (the test_faults*.py
  modules of tests/deploy, tests/backup and tests/remote). A phase is hit by watching
  forge's own output for the line that starts it (``lab.killable.Run.wait_for``).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from _pytest.capture import CaptureResult

# The lab is imported as `lab`, whatever import mode pytest runs in.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from lab import leaks  # noqa: E402
from lab._proc import lab_root  # noqa: E402
from lab.faultproxy import FaultProxy  # noqa: E402
from lab.mariadb import MariaDB, start_mariadb  # noqa: E402
from lab.policy import lab_required  # noqa: E402
from lab.s3 import S3Server, start_s3  # noqa: E402
from lab.site import WordPressSite, start_site  # noqa: E402
from lab.sshd import KeyPair, SshHost, generate_ed25519, start_sshd  # noqa: E402

LAB_FIXTURES = frozenset(
    {
        "sshd_host",
        "ssh_hosts",
        "mariadb_server",
        "wp_site",
        "s3_server",
        "s3_bucket",
        "fault_proxy",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab: uses real services from tests/lab (sshd, nginx, PHP-FPM, MariaDB, S3)"
    )
    config.addinivalue_line(
        "markers", "e2e: runs the actions and workflows end to end, as a site repository would"
    )
    config.addinivalue_line(
        "markers", "faults: kills or cuts off forge mid-run, then checks what a user would check"
    )


_LAB_PACKAGE = Path(_TESTS) / "lab"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (LAB_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or item.path.is_relative_to(_LAB_PACKAGE)):
            item.add_marker(pytest.mark.lab)


def close_all(closers: Iterable[Callable[[], None]]) -> None:
    """Run every closer even if one fails (no leaked services); re-raise the first error."""
    errors: list[BaseException] = []
    for close in closers:
        try:
            close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    """A fresh directory every user can traverse (tmp_path cannot: it is 0700)."""
    path = lab_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_client_key() -> KeyPair:
    """The test's deploy key: every lab host in one test accepts it."""
    return generate_ed25519()


@pytest.fixture
def sshd_host(ssh_client_key: KeyPair) -> Iterator[SshHost]:
    """One sshd for user forgedeploy on its own port, with its own host key."""
    with lab_required():
        host = start_sshd(ssh_client_key)
    yield host
    host.close()


@pytest.fixture
def ssh_hosts(ssh_client_key: KeyPair) -> Iterator[Callable[[int], list[SshHost]]]:
    """Factory: `ssh_hosts(n)` starts n more sshd, all accepting `ssh_client_key`."""
    started: list[SshHost] = []

    def make(n: int = 2) -> list[SshHost]:
        with lab_required():
            hosts = []
            for _ in range(n):
                hosts.append(start_sshd(ssh_client_key))
                started.append(hosts[-1])
        return hosts

    yield make
    close_all(host.close for host in started)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDB]:
    """One MariaDB for the session; tests get their own database from it."""
    with lab_required():
        server = start_mariadb()
    yield server
    server.close()


@pytest.fixture
def wp_site(mariadb_server: MariaDB) -> Iterator[Callable[..., WordPressSite]]:
    """Factory: `wp_site(preview=False, php_workers=4)` starts nginx + PHP-FPM for
    a fresh deploy path and database. Nothing is deployed yet (see lab.bedrock)."""
    started: list[WordPressSite] = []

    def make(*, preview: bool = False, php_workers: int = 4) -> WordPressSite:
        with lab_required():
            site = start_site(mariadb_server, preview=preview, php_workers=php_workers)
        started.append(site)
        # forge's state and log on the target (the releases themselves are code).
        leaks.watch(site.path / ".forge")
        return site

    yield make
    close_all(site.close for site in started)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the session; use your own bucket (`s3_bucket`)."""
    with lab_required():
        server = start_s3()
    yield server
    server.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.create_bucket()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory: `fault_proxy(target_port, target_host="127.0.0.1")` starts a proxy."""
    started: list[FaultProxy] = []

    def make(target_port: int, target_host: str = "127.0.0.1") -> FaultProxy:
        proxy = FaultProxy(target_port, target_host).start()
        started.append(proxy)
        return proxy

    yield make
    close_all(proxy.stop for proxy in started)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Seeded randomness (the fault suite's random moments); the seed is printed so a
    failure can be replayed with FORGE_FAULT_SEED=<seed>."""
    seed = int(os.environ.get("FORGE_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request.node.nodeid}: FORGE_FAULT_SEED={seed}")
    return random.Random(seed)


# Every subprocess output a test reads is checked, from the first import on.
leaks.check_subprocess_output()


@pytest.fixture
def capsys(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    """pytest's capsys, but what a test reads with it is checked for secrets too
    (read output never reaches the report the hook below checks)."""
    read = capsys.readouterr

    def readouterr() -> CaptureResult[str]:
        result = read()
        leaks.check(result.out + result.err, "output read with capsys")
        return result

    capsys.readouterr = readouterr  # type: ignore[method-assign]
    return capsys


def _dirs_to_check(item: pytest.Item) -> list[Path]:
    funcargs = getattr(item, "funcargs", {})
    dirs = [funcargs.get("tmp_path"), funcargs.get("lab_dir"), *leaks.take_watched()]
    return [d for d in dirs if isinstance(d, Path) and d.is_dir()]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail any passing test that showed a secret the lab handed out: in its captured
    output, in a subprocess output or capsys text it read, or in a text file it left
    in tmp_path, lab_dir or a watched directory (checked before fixtures tear down)."""
    outcome = yield
    report = outcome.get_result()
    if call.when == "call":
        dirs = _dirs_to_check(item)
        for path in dirs if report.passed else ():
            leaks.check_tree(path)
    # Sections accumulate over setup, call and teardown: check each phase's own once.
    phase = f" {call.when}"
    captured = "\n".join(text for title, text in report.sections if title.endswith(phase))
    leaks.check(captured, "captured output")
    found = leaks.take_findings()
    if found and report.passed:
        report.outcome = "failed"
        report.longrepr = "a lab secret leaked (something showed it):\n  " + "\n  ".join(found)
