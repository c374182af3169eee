"""A Bedrock site with real WordPress, deployed by forge over real SSH to the lab's
nginx + PHP-FPM + MariaDB stack."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
from lab.bedrock import VERSION_FILE, install_wordpress, make_site, release_line, write_env
from lab.site import WordPressSite
from lab.sshd import SshHost
from lab.users import chown_tree

from forge_ci.cli import main


@dataclass
class SshSite:
    src: Path
    site: WordPressSite
    hosts: list[SshHost]
    env: dict[str, str]
    extra: str = ""

    @classmethod
    def create(cls, workdir: Path, site: WordPressSite, hosts: list[SshHost]) -> SshSite:
        # WordPress's tables exist before the first deploy, as on a migrated site.
        seed = make_site(workdir / "seed", "v0")
        write_env(seed / ".env", site.dotenv())
        chown_tree(seed, site.user)
        install_wordpress(seed, site.url, user=site.user)
        shutil.rmtree(seed)
        src = make_site(workdir / "src", "v1")
        env = {
            "FORGE_SSH_KEY": hosts[0].private_key,
            "FORGE_KNOWN_HOSTS": "".join(h.known_hosts + "\n" for h in hosts),
            "DB_PASSWORD": site.db.password,
            "PATH": "/usr/bin:/bin",
        }
        s = cls(src, site, hosts, env)
        s.configure()
        return s

    def configure(self, extra: str = "", *, health_path: str = "/") -> None:
        self.extra = extra
        hosts = ", ".join(f"{{host: {h.host}, port: {h.port}, user: {h.user}}}" for h in self.hosts)
        dotenv = {k: v for k, v in self.site.dotenv().items() if k != "DB_PASSWORD"}
        dotenv_yaml = "".join(f"      {k}: '{v}'\n" for k, v in dotenv.items())
        (self.src / "forge.yml").write_text(f"""\
version: 1
project: lab-site
environments:
  production:
    url: {self.site.url}
    hosts: [{hosts}]
    path: {self.site.path}
    shared: ["web/app/uploads"]
    health_timeout: 15
    dotenv:
      DB_PASSWORD: "${{DB_PASSWORD}}"
{dotenv_yaml}    health:
      - {{ url: "{self.site.url}{health_path}", status: 200, contains: "</html>" }}
{extra}""")

    def set_version(self, version: str) -> None:
        (self.src / VERSION_FILE).write_text(version + "\n")

    def forge(self, *args: str, env: dict[str, str] | None = None) -> int:
        return main([*args, "--config", str(self.src / "forge.yml")], env=env or self.env)

    def page(self) -> str:
        r = requests.get(self.site.url + "/", timeout=10, allow_redirects=False)
        assert r.status_code == 200, (r.status_code, self.site.logs())
        return r.text

    def serves(self, version: str) -> bool:
        return release_line(version) in self.page()


@dataclass
class Load:
    """Clients requesting the home page without pause; every non-200 is counted."""

    url: str
    clients: int = 2
    statuses: Counter[int | str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                try:
                    r = s.get(self.url, timeout=10, allow_redirects=False)
                    self.statuses[r.status_code] += 1
                except requests.RequestException as e:
                    self.statuses[e.__class__.__name__] += 1

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self._threads.append(t)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    @property
    def failures(self) -> dict[int | str, int]:
        return {k: v for k, v in self.statuses.items() if k != 200}
