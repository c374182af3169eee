"""php.refresh: opcache-reset, against the lab's real PHP-FPM with a cache that
never looks at the disk again (opcache.validate_timestamps=0) and nginx passing
the symlinked path ($document_root): the setup where a switch alone changes
nothing PHP runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lab.mariadb import MariaDB
from lab.policy import lab_required
from lab.site import WordPressSite, start_site
from lab.sshd import SshHost

from forge_ci.cli import main
from forge_ci.deploy.health import MARKER_URL
from forge_ci.errors import ExitCode
from tests.deploy.sshsite import Load, SshSite

# What keeps the old release's code in a pool: nothing is ever revalidated. And
# files are cached even when just written (by default not for 2 s), so a test
# sees the stale code every time, not only when it is slow.
STALE_POOL = {
    "opcache.validate_timestamps": "0",
    "opcache.revalidate_path": "0",
    "opcache.file_update_protection": "0",
}


@pytest.fixture
def cached_site(mariadb_server: MariaDB) -> Iterator[WordPressSite]:
    with lab_required():
        site = start_site(mariadb_server, symlinked_root=True, php_admin=STALE_POOL)
    yield site
    site.close()


@pytest.fixture
def ssh_site(lab_dir: Path, cached_site: WordPressSite, sshd_host: SshHost) -> SshSite:
    return SshSite.create(lab_dir, cached_site, [sshd_host])


def configure(s: SshSite, php: str, *, marker: bool = True, timeout: int = 15) -> None:
    s.configure(f"    php: {php}\n    marker: {'true' if marker else 'false'}\n")
    forge_yml = s.src / "forge.yml"
    forge_yml.write_text(forge_yml.read_text().replace("health_timeout: 15",
                                                       f"health_timeout: {timeout}"))


def deploy(s: SshSite, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    """Exit code and --json output; stderr goes into the output's "log"."""
    capsys.readouterr()
    code = s.forge(*args, "--json")
    out, err = capsys.readouterr()
    return code, dict(json.loads(out) if out.strip().startswith("{") else {}, log=err)


def marker(site: WordPressSite) -> str:
    return requests.get(f"{site.url}/{MARKER_URL}", timeout=10).text.strip()


def live(site: WordPressSite) -> str:
    return os.readlink(site.path / "current").rsplit("/", 1)[-1]


def reset_with(site: WordPressSite) -> str:
    return f"{{ refresh: opcache-reset, fpm_socket: '{site.fpm_socket}' }}"


def test_without_a_refresh_php_keeps_the_old_release_and_opcache_reset_serves_the_new(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    s, site = ssh_site, ssh_site.site
    configure(s, "{ refresh: none }", timeout=3)
    code, first = deploy(s, capsys, "deploy", "production")
    assert code == 0, site.logs()
    assert s.serves("v1") and marker(site) == f"forge-release:{first['release']}"

    # refresh: none in this setup: the marker check sees the old release and
    # forge rolls back. This is the failure opcache-reset exists for.
    s.set_version("v2")
    code, failed = deploy(s, capsys, "deploy", "production")
    assert code == ExitCode.ROLLED_BACK, failed["log"]
    assert f"{MARKER_URL}: response does not contain 'forge-release:" in failed["log"]
    assert marker(site) == f"forge-release:{first['release']}"

    # Without the marker nothing notices: current is the new release, PHP runs the old.
    configure(s, "{ refresh: none }", marker=False)
    code, stale = deploy(s, capsys, "deploy", "production")
    assert code == 0 and live(site) == stale["release"]
    assert s.serves("v1") and not s.serves("v2")

    # opcache-reset: the health check sees the new marker, every worker runs v3.
    configure(s, reset_with(site))
    s.set_version("v3")
    with Load(site.url + "/") as load:
        code, fresh = deploy(s, capsys, "deploy", "production")
        assert code == 0, site.logs()
        assert all(s.serves("v3") for _ in range(20))
    assert marker(site) == f"forge-release:{fresh['release']}"
    assert load.failures == {}, load.statuses
    # Bounded: forge waited for the cache's restart, so the first check passed.
    assert fresh["health"] == "healthy after 1 attempt(s)", fresh["log"]
    assert fresh["switch_to_healthy"] < 5, fresh
    # forge's script came and went: the release is as shipped.
    assert not (site.path / "current/.forge-php-refresh.php").exists()

    # A rollback resets too: the release it goes back to is what PHP runs. (Not to
    # the one deployed with marker: false, which has no marker of its own.)
    code, back = deploy(s, capsys, "rollback", "production", "--to", first["release"])
    assert code == 0, back["log"]
    assert s.serves("v1") and marker(site) == f"forge-release:{first['release']}"


def test_the_refresh_is_logged_with_its_time(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(ssh_site, reset_with(ssh_site.site))
    assert ssh_site.forge("deploy", "production") == 0, ssh_site.site.logs()
    err = capsys.readouterr().err
    assert f"opcache reset in the pool at {ssh_site.site.fpm_socket}" in err
    assert "opcache reset in the FPM pool" in err  # the plan's note


@pytest.mark.parametrize("command", ["deploy", "rollback"])
def test_a_wrong_socket_fails_before_the_switch_with_a_clear_error(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    s, site = ssh_site, ssh_site.site
    configure(s, reset_with(site))
    assert deploy(s, capsys, "deploy", "production")[0] == 0, site.logs()
    if command == "rollback":
        s.set_version("v2")
        assert deploy(s, capsys, "deploy", "production")[0] == 0
    before = live(site)
    wrong = site.fpm_socket.with_name("php8.2-fpm.sock")
    configure(s, f"{{ refresh: opcache-reset, fpm_socket: '{wrong}' }}")
    s.set_version("v9")
    capsys.readouterr()
    code = s.forge(command, "production")
    err = capsys.readouterr().err
    assert code == ExitCode.FAILED, err
    assert f"no PHP-FPM socket at {wrong}" in err
    assert "fastcgi_pass" in err and "Traceback" not in err
    assert site.db.password not in err
    # Nothing was switched: the old release is live and PHP serves it.
    assert live(site) == before
    assert marker(site) == f"forge-release:{before}"
    assert not s.serves("v9")


def test_a_path_that_is_not_a_socket_fails_before_the_switch(
    ssh_site: SshSite, capsys: pytest.CaptureFixture[str], lab_dir: Path
) -> None:
    s, site = ssh_site, ssh_site.site
    configure(s, reset_with(site))
    assert s.forge("deploy", "production") == 0, site.logs()
    before = live(site)
    not_socket = lab_dir / "php-fpm.conf"
    not_socket.write_text("")
    configure(s, f"{{ refresh: opcache-reset, fpm_socket: '{not_socket}' }}")
    s.set_version("v2")
    capsys.readouterr()
    assert s.forge("deploy", "production") == ExitCode.FAILED
    assert f"{not_socket} is not a socket" in capsys.readouterr().err
    assert live(site) == before and s.serves("v1")


def test_local_target_resets_the_pool_too(
    cached_site: WordPressSite, tmp_path: Path
) -> None:
    site = cached_site
    src = tmp_path / "src"
    (src / "web").mkdir(parents=True)
    (src / "web/index.php").write_text("<?php echo 'page v1';\n")
    (src / "forge.yml").write_text(
        "version: 1\nproject: t\nenvironments:\n  local:\n"
        f"    path: {site.path}\n    url: {site.url}\n    health_timeout: 5\n"
        f"    php: {reset_with(site)}\n"
    )
    argv = ["deploy", "local", "--config", str(src / "forge.yml")]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    assert main(argv, env=env) == 0, site.logs()
    assert requests.get(site.url + "/", timeout=10).text == "page v1"
    (src / "web/index.php").write_text("<?php echo 'page v2';\n")
    assert main(argv, env=env) == 0, site.logs()
    assert requests.get(site.url + "/", timeout=10).text == "page v2"
