"""``forge-ci doctor``: a server checked before the first deploy, as a new user would.

The healthy case is the lab's real WordPress stack over real SSH; each broken case
breaks one thing the way it breaks on real servers (a tool missing from PATH, a
path the deploy user cannot write, a docroot elsewhere, PHP not run)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from lab.site import WordPressSite
from lab.sshd import SshHost

from forge_ci.deploy.observe import REQUIRED_TOOLS
from tests.deploy.conftest import LocalSite
from tests.deploy.sshsite import SshSite


def _doctor(run: Callable[..., int], capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[int, dict[str, tuple[str, str, str]]]:
    """Exit code and {check: (status, detail, hint)} (the last finding of each check)."""
    capsys.readouterr()
    rc = run("doctor", *args, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (rc == 0)
    return rc, {c["check"]: (c["status"], c["detail"], c["hint"]) for c in report["checks"]}


def _tree(path: Path) -> set[str]:
    """Every path under PATH, except the staged copy a deploy makes in the background
    for the next one: never entered, since it is being written (and renamed) while the
    test walks."""
    found: set[str] = set()
    for top, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if ".forge-base-" not in d]
        found.update(os.path.relpath(os.path.join(top, n), path)
                     for n in [*dirs, *files] if ".forge-base-" not in n)
    return found


@pytest.fixture
def ssh_site(lab_dir: Path, wp_site: Callable[..., WordPressSite], sshd_host: SshHost) -> SshSite:
    site = SshSite.create(lab_dir, wp_site(preview=True), [sshd_host])
    site.configure(f"    preview: {{ url: '{site.site.preview_url}' }}\n")
    return site


def test_the_lab_site_passes_every_check_before_and_after_the_first_deploy(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ssh_site.site.path
    before = _tree(path)
    rc, checks = _doctor(ssh_site.forge, capsys, "production")
    assert rc == 0, checks
    assert {c: s for c, (s, _, _) in checks.items()} == {
        "tools": "ok", "path": "ok", "disk": "ok", "shared": "ok", "docroot": "ok",
        "php": "ok", "preview": "ok"}
    assert "reads a 0600 file" in checks["php"][1]
    assert _tree(path) == before  # the probe left nothing behind

    assert ssh_site.forge("deploy", "production") == 0
    live = os.readlink(path / "current")
    before = _tree(path)
    rc, checks = _doctor(ssh_site.forge, capsys, "production")
    assert rc == 0 and checks["docroot"][0] == checks["php"][0] == "ok", checks
    assert os.readlink(path / "current") == live and _tree(path) == before
    assert ssh_site.serves("v1")

    # The human form: one line per check, then the verdict.
    assert ssh_site.forge("doctor", "production") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok    tools") and out[-1] == "everything a deploy needs is in place"


def test_a_path_the_deploy_user_cannot_write_and_a_docroot_elsewhere_are_named(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = ssh_site.site.path / "locked"
    locked.mkdir(mode=0o755)  # root's: the deploy user cannot write there
    text = (ssh_site.src / "forge.yml").read_text()
    (ssh_site.src / "forge.yml").write_text(text.replace(f"path: {ssh_site.site.path}",
                                                         f"path: {locked}"))
    rc, checks = _doctor(ssh_site.forge, capsys, "production")
    assert rc == 1
    status, detail, hint = checks["path"]
    assert status == "fail" and str(locked) in detail and "chown" in hint

    # The site URL answered by a server whose root is <path>/next/web, not current/web.
    ssh_site.configure()
    text = (ssh_site.src / "forge.yml").read_text()
    (ssh_site.src / "forge.yml").write_text(
        text.replace(f"url: {ssh_site.site.url}", f"url: {ssh_site.site.preview_url}"))
    rc, checks = _doctor(ssh_site.forge, capsys, "production")
    assert rc == 1
    status, detail, hint = checks["docroot"]
    assert status == "fail" and f"does not serve {ssh_site.site.path}/current/web" in detail
    assert f"root {ssh_site.site.path}/current/web;" in hint


def test_an_existing_site_over_ssh_is_adopted_with_its_uploads_served_from_shared(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ssh_site.site.path
    uploads = path / "web/app/uploads/2024"
    uploads.mkdir(parents=True)
    (uploads / "photo.txt").write_text("a photo\n")
    subprocess.run(["chown", "-R", ssh_site.site.user, str(path / "web")], check=True)

    rc, checks = _doctor(ssh_site.forge, capsys, "production")
    assert rc == 0 and checks["site"][0] == "warn" and "--adopt" in checks["site"][2]
    assert ssh_site.forge("deploy", "production") == 1
    assert "--adopt" in capsys.readouterr().err
    assert ssh_site.forge("deploy", "production", "--adopt", "--dry-run") == 0
    assert "web/app/uploads -> shared/web/app/uploads" in capsys.readouterr().out
    assert (uploads / "photo.txt").is_file() and not (path / "shared").exists()

    assert ssh_site.forge("deploy", "production", "--adopt") == 0
    assert ssh_site.serves("v1")
    import requests

    r = requests.get(ssh_site.site.url + "/app/uploads/2024/photo.txt", timeout=10)
    assert (r.status_code, r.text) == (200, "a photo\n")
    assert (path / "shared/web/app/uploads/2024/photo.txt").is_file()


def test_a_missing_tool_and_php_not_run_are_named_with_a_fix(
    local_site: LocalSite, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with every tool but tar (flock may be missing: a mkdir lock replaces it).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*REQUIRED_TOOLS, "sh", "mktemp", "rm", "df", "awk", "dirname", "mkdir",
                 "chmod", "sync"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                               text=True).stdout.strip()
        if tool not in ("tar", "flock") and found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    rc, checks = _doctor(local_site.forge, capsys, "local", "--min-free-mb", "1")
    monkeypatch.undo()
    assert rc == 1
    assert checks["tools"][:2] == ("fail", "missing tar")
    assert "tar" in checks["tools"][2]

    # The local site's web server serves current/web, but only as static files.
    rc, checks = _doctor(local_site.forge, capsys, "local", "--min-free-mb", "1")
    assert rc == 1
    assert checks["tools"][0] == checks["docroot"][0] == "ok"
    assert checks["php"][:2] == ("fail", "PHP files are sent as text, not run")
    assert not (local_site.target / "current").exists()
    assert not (local_site.target / "releases").exists()
