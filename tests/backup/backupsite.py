"""One backup site for a whole fault module (tests/backup's ``new_site``: a MariaDB
database with awkward rows, an uploads tree with awkward names), backed up over real
SSH to moto S3, with a fault proxy in front of each. Everything goes through the
``forge-ci`` command and is checked by what a user sees (snapshots, verify, restored
bytes), never by the store's object names."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab._proc import lab_root
from lab.faultproxy import FaultProxy
from lab.killable import Run
from lab.mariadb import MariaDB
from lab.policy import lab_required
from lab.s3 import S3Server
from lab.sshd import SshHost, start_sshd

from tests.backup.conftest import Site, drop_site, new_site


@dataclass
class BackupSite:
    site: Site
    sshd: SshHost
    s3: S3Server
    s3_proxy: FaultProxy
    ssh_proxy: FaultProxy
    workdir: Path
    runs: int = 0
    _client: Any = field(default=None, repr=False)

    @property
    def bucket(self) -> str:
        return self.site.config.read_text().split("store: s3://")[1].split("/")[0]

    def spawn(self, *argv: str, read: bool = True) -> Run:
        """forge-ci in a process of its own, to kill; ``read``: with the identity."""
        self.runs += 1
        return Run([argv[0], "--config", str(self.site.config), *argv[1:]],
                   self.site.environ(read=read), self.workdir / f"run-{self.runs}.out")

    def cli(self, *argv: str, read: bool = True) -> Any:
        """``forge-ci ... --json`` in this process (for module fixtures, which cannot
        use capsys); it must succeed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = self.site.run(*argv, "--json", read=read)
        assert rc == 0, f"forge-ci {' '.join(argv)} exited {rc}"
        return json.loads(out.getvalue())

    def snapshots(self, capsys: pytest.CaptureFixture[str]) -> list[str]:
        return [s["id"] for s in self.site.json(capsys, "snapshots", "production")["snapshots"]]

    def backup(self, capsys: pytest.CaptureFixture[str]) -> str:
        """A normal backup; it must succeed."""
        return str(self.site.json(capsys, "backup", "production", read=False)["snapshot_id"])

    def verify(self, ids: list[str]) -> None:
        """``forge-ci verify --snapshot ID`` passes for each of ``ids`` (run side by side)."""
        runs = {sid: self.spawn("verify", "production", "--snapshot", sid) for sid in ids}
        for sid, run in runs.items():
            assert run.wait() == 0, f"verify {sid}:\n{run.output}"

    def open_uploads(self) -> list[str]:
        """Multipart uploads still open in the bucket (what `aws s3api
        list-multipart-uploads` shows)."""
        if self._client is None:
            self._client = self.s3.client()
        listing = self._client.list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in listing.get("Uploads", [])]

    def staging_dirs(self) -> list[Path]:
        """What a restore stages into and must never leave behind."""
        root = self.site.root
        return [*root.glob(".forge/restore-*"), *root.rglob(".forge-restore-*")]

    def fill_disk(self, leave: int) -> Path:
        ballast = self.site.root / "ballast"
        st = os.statvfs(self.site.root)
        free = st.f_bavail * st.f_frsize
        subprocess.run(["fallocate", "-l", str(max(free - leave, 0)), str(ballast)], check=True)
        return ballast


@contextlib.contextmanager
def backup_site(mariadb: MariaDB, s3: S3Server, *, disk_mb: int = 0,
                big: int = 1_000_000) -> Iterator[BackupSite]:
    """With ``disk_mb``, the site (its uploads, restore's staging) lives on a tmpfs of
    that size, so a test can fill the disk."""
    workdir = lab_root()
    with lab_required():
        sshd = start_sshd()
    proxies: list[FaultProxy] = []
    root = workdir / "site"
    mounted = False
    site: Site | None = None
    try:
        if disk_mb:
            root.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m,mode=0755",
                            "tmpfs", str(root)], check=True)
            mounted = True
        ssh_proxy = FaultProxy(sshd.port).start()
        s3_proxy = FaultProxy(s3.port).start()
        proxies += [ssh_proxy, s3_proxy]
        site = new_site(mariadb, workdir, s3=s3, sshd=sshd,
                        retention="{ keep_last: 100 }", big=big)
        site.config.write_text(site.config.read_text().replace(
            f"port: {sshd.port},", f"port: {ssh_proxy.port},"))
        site.base_environ["FORGE_KNOWN_HOSTS"] = sshd.known_hosts.replace(
            f":{sshd.port} ", f":{ssh_proxy.port} ")
        site.base_environ |= s3.env(s3_proxy.url)
        yield BackupSite(site, sshd, s3, s3_proxy, ssh_proxy, workdir)
    finally:
        for proxy in proxies:
            proxy.stop()
        if site is not None:
            drop_site(site)
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)
        sshd.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
