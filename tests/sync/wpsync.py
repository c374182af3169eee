"""Two real WordPress environments on the lab (production and staging), one forge.yml.

Both are served by the lab's nginx + PHP-FPM from their own deploy path and database
on the session's MariaDB, and reached by forge over real SSH as the deploy user.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import requests
from lab._proc import require_binary, run
from lab.bedrock import hand_deploy
from lab.mariadb import Database, MariaDB
from lab.site import WordPressSite
from lab.sshd import SshHost
from lab.users import DEPLOY_USER, chown_tree

from forge_ci.cli import main

HERE = Path(__file__).parent


def _db_yaml(db: Database, var: str) -> str:
    return (f"{{ name: {db.name}, user: {db.user}, password: \"${{{var}}}\", "
            f"host: {db.host}, port: {db.port} }}")


@dataclass
class TwoSites:
    prod: WordPressSite
    staging: WordPressSite
    host: SshHost
    mariadb: MariaDB
    config: Path
    env: dict[str, str]

    @classmethod
    def create(cls, workdir: Path, prod: WordPressSite, staging: WordPressSite, host: SshHost,
               mariadb: MariaDB, extra: str = "") -> TwoSites:
        for site in (prod, staging):
            hand_deploy(site, "20260101T000000Z-aaaa", "v1")
        config = workdir / "forge.yml"
        env = {"FORGE_SSH_KEY": host.private_key, "FORGE_KNOWN_HOSTS": host.known_hosts + "\n",
               "PROD_DB_PASSWORD": prod.db.password,
               "STAGING_DB_PASSWORD": staging.db.password, "PATH": "/usr/bin:/bin"}
        s = cls(prod, staging, host, mariadb, config, env)
        s.configure(extra)
        return s

    def configure(self, extra: str = "", prod_extra: str = "") -> None:
        h = f"[{{ host: {self.host.host}, port: {self.host.port}, user: {self.host.user} }}]"
        self.config.write_text(f"""\
version: 1
project: lab-sync
environments:
  production:
    url: {self.prod.url}
    hosts: {h}
    path: {self.prod.path}
    database: {_db_yaml(self.prod.db, "PROD_DB_PASSWORD")}
{prod_extra}  staging:
    url: {self.staging.url}
    hosts: {h}
    path: {self.staging.path}
    database: {_db_yaml(self.staging.db, "STAGING_DB_PASSWORD")}
    hooks:
      after_sync: ['echo "$FORGE_SYNC_FROM" > "$FORGE_PATH/.forge/after-sync.txt"']
{extra}""")

    def forge(self, *args: str) -> int:
        return main([*args, "--config", str(self.config)], env=self.env)

    def php(self, script: str, env: dict[str, str], *, user: str = DEPLOY_USER) -> str:
        php = require_binary("php")
        runuser = require_binary("runuser")
        return run([runuser, "-u", user, "--", php, "-d", "display_errors=stderr"],
                   what=script, input=(HERE / script).read_text(),
                   env={"PATH": "/usr/local/bin:/usr/bin:/bin", **env}, cwd=Path("/"),
                   timeout=120)

    def seed(self) -> None:
        self.php("wp_seed.php", {"FORGE_ROOT": str(self.prod.path / "current")})

    def check(self) -> dict[str, object]:
        env = {"FROM_URL": self.prod.url, "TO_URL": self.staging.url}
        for prefix, db in (("FROM_DB", self.prod.db), ("TO_DB", self.staging.db)):
            env |= {f"{prefix}_HOST": db.host, f"{prefix}_PORT": str(db.port),
                    f"{prefix}_NAME": db.name, f"{prefix}_USER": db.user,
                    f"{prefix}_PASSWORD": db.password}
        out = self.php("wp_check.php", env)
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return result

    def checksums(self, db: Database) -> dict[str, str]:
        """Every table's name and CHECKSUM TABLE: equal means byte-for-byte equal rows."""
        tables = self.mariadb.sql("SELECT table_name FROM information_schema.tables WHERE "
                                  f"table_schema = '{db.name}' ORDER BY table_name").split()
        if not tables:
            return {}
        out = self.mariadb.sql("CHECKSUM TABLE " + ", ".join(f"`{db.name}`.`{t}`" for t in tables)
                               + " EXTENDED")
        return dict(line.split("\t", 1) for line in out.splitlines())

    def select(self, db: Database, sql: str) -> str:
        return self.mariadb.sql(sql, database=db.name)

    def uploads(self, site: WordPressSite) -> Path:
        return site.path / "shared" / "web" / "app" / "uploads"

    def put_upload(self, site: WordPressSite, name: str, data: bytes, mtime: int) -> Path:
        path = self.uploads(site) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        chown_tree(self.uploads(site), DEPLOY_USER)
        return path

    def page(self, site: WordPressSite) -> str:
        r = requests.get(site.url + "/", timeout=20, allow_redirects=False)
        assert r.status_code == 200, (r.status_code, site.logs())
        return r.text

    def close(self) -> None:
        shutil.rmtree(self.config.parent, ignore_errors=True)
