"""A site on the local target, served by a real HTTP server from <path>/current/web."""

from __future__ import annotations

import functools
import http.server
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab import leaks
from lab.mariadb import MariaDB
from lab.webserver import serve

from forge_ci.cli import main

from .deploysite import DeploySite, deploy_site


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@dataclass
class LocalSite:
    src: Path
    target: Path
    url: str
    env: dict[str, str]

    def write(self, rel: str, text: str) -> None:
        p = self.src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def config(self, extra: str = "", health: str = "") -> None:
        (self.src / "forge.yml").write_text(
            "version: 1\nproject: t\nbuild: {exclude: [target]}\nenvironments:\n  local:\n"
            f"    path: ../target\n    url: {self.url}\n    marker: false\n"
            f"    health_timeout: 3\n    shared: [web/app/uploads]\n{extra}"
            + (
                f"    health:\n{health}"
                if health
                else f"    health:\n      - {{url: '{self.url}/index.html', contains: 'ok'}}\n"
            )
        )

    def forge(self, *args: str) -> int:
        return main([*args, "--config", str(self.src / "forge.yml")], env=self.env)

    @property
    def current(self) -> str:
        return os.readlink(self.target / "current").split("/")[-1]

    def page(self) -> str:
        return (self.target / "current/web/index.html").read_text()


@pytest.fixture
def local_site(tmp_path: Path) -> Iterator[LocalSite]:
    target = leaks.deploy_target(tmp_path / "target")
    target.mkdir()
    handler = functools.partial(_Quiet, directory=str(target / "current" / "web"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve(server)
    site = LocalSite(
        tmp_path / "src",
        target,
        f"http://127.0.0.1:{server.server_address[1]}",
        {"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    site.write("web/index.html", "ok v1\n")
    site.config()
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site(mariadb_server: MariaDB) -> Iterator[DeploySite]:
    """The fault suite's site (test_faults_kill.py): one per module, a good release live.
    Every test leaves it as a normal run does, so the next one starts from a good state."""
    with deploy_site(mariadb_server) as s:
        yield s
