"""Three hosts behind a real nginx load balancer (round robin), under load.

Each host is an sshd in its own mount namespace (its own view of the deploy
path, as in test_multihost) with its own nginx + PHP page; the site URL and the
health checks point at the balancer. A release broken on one host only (its
``config/host.php``, a shared per-host file, lacks what the new page needs: the
page answers 500 there while forge's marker still answers) must never go live,
and the host must be named; a good release must go live with no failed request.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab.balancer import Balanced, start_balanced
from lab.sshd import SshHost, known_hosts
from lab.users import chown_tree

from forge_ci.cli import main
from forge_ci.errors import ExitCode

from .test_multihost import MOUNT, NamespacedHost

pytestmark = pytest.mark.lab

PAGE = "<?php\nrequire __DIR__ . '/../config/host.php';\necho 'ok {version} ', {call}, \"\\n\";\n"
GOOD = PAGE.format(version="{version}", call="HOST_NAME")
# Needs a function that only some hosts' config/host.php define: 500 on the others.
NEEDS_GREETING = PAGE.format(version="{version}", call="host_greeting()")


@dataclasses.dataclass
class Lab:
    hosts: list[NamespacedHost]
    web: Balanced
    src: Path

    def names(self) -> list[str]:
        return [f"{h.user}@127.0.0.1:{h.port}" for h in self.hosts]

    def configure(self, extra: str = "") -> None:
        hl = "".join(f"      - {{host: 127.0.0.1, port: {h.port}, user: {h.user}, "
                     f"check_address: {a}}}\n"
                     for h, a in zip(self.hosts, self.web.addresses, strict=True))
        (self.src / "forge.yml").write_text(
            f"version: 1\nproject: balanced\nenvironments:\n  prod:\n    hosts:\n{hl}"
            f"    path: {MOUNT}/site\n    url: {self.web.url}\n    shared: [config/host.php]\n"
            f"    health: [{{url: '{self.web.url}/', contains: 'ok'}}]\n"
            f"    health_timeout: 10\n{extra}")

    def release(self, page: str, version: str) -> None:
        (self.src / "web/index.php").write_text(page.replace("{version}", version))

    def forge(self, *args: str) -> int:
        env = {"FORGE_SSH_KEY": self.hosts[0].private_key,
               "FORGE_KNOWN_HOSTS": known_hosts(self.hosts), "PATH": os.environ["PATH"]}
        return main([*args, "--config", str(self.src / "forge.yml")], env=env)

    def live(self) -> list[str]:
        return [os.readlink(h.disk / "site/current").split("/")[-1] for h in self.hosts]

    def pages(self) -> set[str]:
        """What each host's own web server answers, read through the balancer's
        round robin until every host has answered (bodies name the host)."""
        seen: dict[str, str] = {}
        for _ in range(30):
            status, body = _get(self.web.url + "/")
            assert status == 200, body
            seen[body.split()[-1]] = body.split()[1]
            if len(seen) == len(self.hosts):
                break
        return set(seen.values())


def _get(url: str) -> tuple[int, str]:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", "/" + rest)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class Load:
    """Visitors: a thread requesting the site through the balancer non-stop."""

    def __init__(self, url: str) -> None:
        self.url, self.ok = url, 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = _get(self.url + "/")
            except OSError as e:
                self.failed.append(str(e))
                continue
            if status == 200 and body.startswith("ok "):
                self.ok += 1
            else:
                self.failed.append(f"HTTP {status}: {body[:80]!r}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture
def lab(lab_dir: Path, ssh_hosts: Callable[[int], list[SshHost]]) -> Iterator[Lab]:
    MOUNT.mkdir(parents=True, exist_ok=True)
    hosts: list[NamespacedHost] = []
    for i, plain in enumerate(ssh_hosts(3)):
        plain.stop()
        disk = lab_dir / f"disk{i}"
        (disk / "site/shared/config").mkdir(parents=True)
        fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(plain) if f.init}
        hosts.append(NamespacedHost(**fields, disk=disk))
        hosts[-1].start()
    src = lab_dir / "src"
    (src / "web").mkdir(parents=True)
    (src / "config").mkdir()
    web = start_balanced([h.disk / "site" for h in hosts], user=hosts[0].user)
    chown_tree(lab_dir, hosts[0].user)
    lab = Lab(hosts, web, src)
    lab.configure()
    yield lab
    web.close()
    for h in hosts:
        h.stop()


def _host_php(lab: Lab, greeting_on: set[int]) -> None:
    """Each host's own config/host.php (kept in shared/, as operators do)."""
    for i, h in enumerate(lab.hosts):
        php = f"<?php\nconst HOST_NAME = 'host{i}';\n"
        if i in greeting_on:
            php += "function host_greeting(): string { return HOST_NAME; }\n"
        (h.disk / "site/shared/config/host.php").write_text(php)
    chown_tree(lab.src.parent, lab.hosts[0].user)


def _first_good(lab: Lab) -> list[str]:
    _host_php(lab, greeting_on={0, 1})  # host2 is the one a greeting page breaks
    lab.release(GOOD, "v1")
    assert lab.forge("deploy", "prod") == 0, lab.web.logs()
    assert lab.pages() == {"v1"}
    return lab.live()


def test_a_release_broken_on_one_host_is_rolled_back_on_every_host(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _first_good(lab)
    lab.release(NEEDS_GREETING, "v2")
    capsys.readouterr()
    assert lab.forge("deploy", "prod", "--json") == ExitCode.ROLLED_BACK
    assert lab.live() == before
    assert lab.pages() == {"v1"}
    out = capsys.readouterr()
    # The host that failed is named, with what it answered.
    broken = lab.names()[2]
    assert f"{broken}: unhealthy while serving the new release" in out.err + out.out
    assert "HTTP 500" in out.err + out.out
    for h in lab.hosts:
        states = [json.loads(x)["state"]
                  for x in (h.disk / "site/.forge/log.jsonl").read_text().splitlines()]
        assert states[-1] == "bad"


def test_with_a_preview_route_the_broken_host_is_refused_before_any_visitor_sees_it(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.configure(f"    preview: {{url: '{lab.web.preview_url}', on_host: true}}\n")
    before = _first_good(lab)
    lab.release(NEEDS_GREETING, "v2")
    capsys.readouterr()
    with Load(lab.web.url) as load:
        code = lab.forge("deploy", "prod")
    assert code == ExitCode.FAILED
    out = capsys.readouterr()
    assert f"{lab.names()[2]}: " in out.err and "preview route" in out.err
    assert lab.live() == before
    assert load.failed == [] and load.ok > 0

    # Fine everywhere: live on every host, and no visitor saw an error.
    lab.release(GOOD, "v3")
    with Load(lab.web.url) as load:
        assert lab.forge("deploy", "prod") == 0
    assert load.failed == [] and load.ok > 0
    assert lab.pages() == {"v3"}


def test_a_good_release_goes_live_on_every_host_with_no_failed_request(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    _first_good(lab)
    lab.release(GOOD, "v2")
    with Load(lab.web.url) as load:
        assert lab.forge("deploy", "prod") == 0
    assert load.failed == [] and load.ok > 0
    assert lab.pages() == {"v2"}
    assert len(set(lab.live())) == 1

    # A rollback is checked the same way: on each host, then through the balancer.
    capsys.readouterr()
    with Load(lab.web.url) as load:
        assert lab.forge("rollback", "prod") == 0
    assert load.failed == [] and lab.pages() == {"v1"}
    err = capsys.readouterr().err
    assert all(f"health: {n}: healthy" in err for n in lab.names())


def test_rolling_goes_host_by_host_and_a_bad_release_stops_at_the_first_batch(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.configure("    strategy: rolling\n    rolling: {batch: 1}\n")
    _host_php(lab, greeting_on={1, 2})  # a greeting page breaks host0: the first batch
    lab.release(GOOD, "v1")
    assert lab.forge("deploy", "prod") == 0
    lab.release(GOOD, "v2")
    capsys.readouterr()
    assert lab.forge("deploy", "prod", "--dry-run", "--json") == 0
    names = lab.names()
    plan = json.loads(capsys.readouterr().out)
    assert plan["strategy"] == "rolling" and plan["batches"] == [[n] for n in names]
    with Load(lab.web.url) as load:
        assert lab.forge("deploy", "prod") == 0
    assert load.failed == [] and load.ok > 0
    assert lab.pages() == {"v2"}
    out = capsys.readouterr().err
    # Batch by batch: each host switched and checked before the next one switches.
    order = [out.index(f"{n}: switching current") for n in names]
    checked = [out.index(f"{n}: healthy") for n in names]
    assert order[0] < checked[0] < order[1] < checked[1] < order[2] < checked[2]

    good = lab.live()
    lab.release(NEEDS_GREETING, "v3")
    assert lab.forge("deploy", "prod") == ExitCode.ROLLED_BACK
    assert lab.live() == good
    err = capsys.readouterr().err
    assert f"{names[0]}: unhealthy" in err
    assert f"never switched: {names[1]}, {names[2]}" in err
    assert f"{names[1]}: switching current" not in err
    assert lab.pages() == {"v2"}
