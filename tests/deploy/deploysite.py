"""One site for a whole fault module: the lab's nginx + PHP-FPM serving a small PHP
release, deployed by forge over real SSH through a fault proxy, on a tmpfs of its own
(so a test can fill the disk).

The release is small on purpose (a fault suite deploys it dozens of times), but it
is only whole with everything a deploy puts in: its ``.env`` (written per release),
the shared uploads link and its version file. Anything missing and the page answers
500, so "200 with a release line" means a complete release is live.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from lab._proc import lab_root
from lab.bedrock import VERSION_FILE, release_line
from lab.faultproxy import FaultProxy
from lab.killable import Run
from lab.mariadb import MariaDB
from lab.policy import lab_required
from lab.site import WordPressSite, start_site
from lab.sshd import SshHost, start_sshd

from tests.deploy.sshsite import SshSite

INDEX_PHP = """\
<?php
// Whole only with its own .env, the shared uploads link and its version file.
$env = @file_get_contents(dirname(__DIR__) . '/.env');
$version = @file_get_contents(__DIR__ . '/app/themes/forge-example/version.txt');
if ($env === false || strpos($env, 'DB_PASSWORD=') === false || $version === false
        || !is_dir(__DIR__ . '/app/uploads')) {
    http_response_code(500);
    echo "incomplete release\\n";
    exit;
}
header('Cache-Control: no-store');
echo '<!doctype html><html><body><p>release ' . trim($version) . "</p></body></html>\\n";
"""

_VERSION = re.compile(r"release (v\d+)<")


@dataclass(frozen=True)
class Endpoint:
    """Where forge connects: the proxy's port in front of the real sshd (SshSite's
    configure reads only host, port and user)."""

    host: str
    port: int
    user: str


@dataclass
class DeploySite:
    ssh: SshSite
    sshd: SshHost
    proxy: FaultProxy
    workdir: Path
    made: int = 0  # versions built so far: each attempt gets a new one
    runs: int = 0

    @property
    def path(self) -> Path:
        return self.ssh.site.path

    @property
    def url(self) -> str:
        return self.ssh.site.url

    @property
    def reload_sentinel(self) -> Path:
        """A file the deploy user may write: the PHP refresh command touches it first."""
        return self.ssh.site.workdir / "fpm" / "refresh-started"

    def new_version(self) -> str:
        self.made += 1
        version = f"v{self.made}"
        self.ssh.set_version(version)
        return version

    def config(self, extra: str = "", *, slow_health: bool = False) -> None:
        """forge.yml with the preview route; ``slow_health``: the health check asks for
        a page that takes 0.3 s, as a real page may, so a test can act while it runs."""
        preview = f"    preview: {{ url: '{self.ssh.site.preview_url}' }}\n"
        self.ssh.configure(preview + extra, health_path="/slow.php" if slow_health else "/")

    def forge(self, *args: str) -> tuple[int, Any]:
        """Run forge-ci in this process; with --json also return what it printed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = self.ssh.forge(*args)
        return rc, (json.loads(out.getvalue()) if "--json" in args and rc == 0 else None)

    def spawn(self, *args: str) -> Run:
        """forge-ci in a process of its own, to kill."""
        self.runs += 1
        config = str(self.ssh.src / "forge.yml")
        return Run([*args, "--config", config], self.ssh.env,
                   self.workdir / f"run-{self.runs}.out")

    def deploy(self) -> str:
        """A normal deploy of a new version; it must succeed and be served."""
        version = self.new_version()
        rc, _ = self.forge("deploy", "production")
        assert rc == 0, f"the normal deploy of {version} exited {rc}\n{self.ssh.site.logs()}"
        assert self.served() == version
        return version

    def served(self) -> str:
        """What a visitor and an operator see: 200, a release line, and PHP's marker
        naming the release ``current`` points at. Returns the version served."""
        page = requests.get(self.url + "/", timeout=10, allow_redirects=False)
        assert page.status_code == 200, (page.status_code, page.text[:300])
        found = _VERSION.search(page.text)
        assert found, page.text[:300]
        current = os.readlink(self.path / "current")
        assert current.startswith("releases/"), current
        marker = requests.get(self.url + "/forge-release.php", timeout=10)
        assert marker.status_code == 200
        assert marker.text.strip() == f"forge-release:{current.removeprefix('releases/')}"
        assert release_line(found.group(1)) in page.text
        return found.group(1)

    def releases(self) -> dict[str, dict[str, Any]]:
        rc, out = self.forge("releases", "production", "--json")
        assert rc == 0
        return {r["id"]: r for r in out["releases"]}

    def lock_is_free(self) -> bool:
        """The deploy lock can be taken (flock waits a little for the killed run's
        connection to close; a stale lock would make it give up)."""
        lock = self.path / ".forge" / "lock"
        return subprocess.run(["flock", "-w", "10", str(lock), "true"]).returncode == 0

    def assert_good(self, versions: set[str]) -> str:
        """After a fault: one of ``versions`` is served, whole (see INDEX_PHP), by the
        release ``current`` points at, and the lock is free. Returns the version."""
        version = self.served()
        assert version in versions, f"serving {version}, expected one of {sorted(versions)}"
        assert self.lock_is_free(), "the killed run's lock is still held"
        return version

    def assert_tidy(self) -> None:
        """After the next normal run: no unfinished or unknown release left, every
        release directory known to the log, the live one marked live."""
        releases = self.releases()
        states = {rid: r["state"] for rid, r in releases.items()}
        assert all(s in ("live", "previous", "rolled_back", "prepared", "bad")
                   for s in states.values()), states
        assert all(r["present"] for r in releases.values()), releases
        on_disk = {d for d in os.listdir(self.path / "releases") if not d.startswith(".")}
        assert on_disk == set(releases), (on_disk, states)
        [current] = [rid for rid, r in releases.items() if r["current"]]
        assert states[current] == "live"

    def fill_disk(self, leave: int) -> Path:
        """Fill the site's filesystem until only ``leave`` bytes are free."""
        ballast = self.path / "ballast"
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        subprocess.run(["fallocate", "-l", str(max(free - leave, 0)), str(ballast)], check=True)
        return ballast


def make_source(src: Path) -> Path:
    (src / "web").mkdir(parents=True)
    (src / "web" / "index.php").write_text(INDEX_PHP)
    (src / "web" / "slow.php").write_text("<?php usleep(300000); require __DIR__ . '/index.php';\n")
    (src / VERSION_FILE).parent.mkdir(parents=True)
    (src / VERSION_FILE).write_text("v0\n")
    return src


@contextlib.contextmanager
def deploy_site(mariadb: MariaDB, *, disk_mb: int = 64) -> Iterator[DeploySite]:
    """A site with one good release live (v1), for a module's tests to share."""
    workdir = lab_root()
    with lab_required():
        sshd = start_sshd()
    proxy: FaultProxy | None = None
    site: WordPressSite | None = None
    mounted = False
    try:
        with lab_required():
            site = start_site(mariadb, preview=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m,mode=0755", "tmpfs",
                        str(site.path)], check=True)
        mounted = True
        subprocess.run(["chown", site.user, str(site.path)], check=True)
        proxy = FaultProxy(sshd.port).start()
        env = {
            "FORGE_SSH_KEY": sshd.private_key,
            "FORGE_KNOWN_HOSTS": sshd.known_hosts.replace(f":{sshd.port} ", f":{proxy.port} ")
            + "\n",
            "DB_PASSWORD": site.db.password,
            "PATH": "/usr/bin:/bin",
        }
        ssh = SshSite(make_source(workdir / "src"), site,
                      [Endpoint(sshd.host, proxy.port, sshd.user)], env)  # type: ignore[list-item]
        s = DeploySite(ssh, sshd, proxy, workdir)
        s.config()
        s.deploy()
        yield s
    finally:
        if proxy is not None:
            proxy.stop()
        if site is not None:
            site.stop()
            if mounted:
                subprocess.run(["umount", "-l", str(site.path)], check=False)
            site.close()
        sshd.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
