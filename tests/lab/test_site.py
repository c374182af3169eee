"""The lab's WordPress stack serves the example Bedrock site from
<path>/current, follows a switch of `current`, and never loops on redirects."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from collections.abc import Callable

import requests
from lab.bedrock import (
    hand_deploy,
    install_wordpress,
    make_site,
    release_line,
    switch_link,
    write_env,
)
from lab.site import WordPressSite
from lab.sshd import SshHost
from lab.users import chown_tree


def get(url: str) -> requests.Response:
    # requests gives up after 30 redirects: a loop shows up as TooManyRedirects.
    return requests.get(url, timeout=15)


def test_release_swap_by_hand(wp_site: Callable[..., WordPressSite]) -> None:
    site = wp_site()
    r1 = make_site(site.path / "releases" / "r1", "v1")
    write_env(r1 / ".env", site.dotenv(), owner=site.user)
    chown_tree(site.path, site.user)
    switch_link(site.path / "current", "releases/r1")
    install_wordpress(site.path / "current", site.url)

    env_stat = (r1 / ".env").stat()
    assert stat.S_IMODE(env_stat.st_mode) == 0o600
    assert pwd.getpwuid(env_stat.st_uid).pw_name == "forgedeploy"
    assert os.readlink(site.path / "current") == "releases/r1"

    page = get(site.url + "/")
    assert page.status_code == 200, site.logs()
    assert not page.history
    assert release_line("v1") in page.text
    assert page.headers["X-Forge-Release"] == "v1"

    r2 = make_site(site.path / "releases" / "r2", "v2")
    (r2 / ".env").symlink_to(r1 / ".env")
    chown_tree(r2, site.user)
    switch_link(site.path / "current", "releases/r2")

    page = get(site.url + "/")
    assert page.status_code == 200, site.logs()
    assert release_line("v2") in page.text
    assert release_line("v1") not in page.text


def test_wordpress_routes(wp_site: Callable[..., WordPressSite]) -> None:
    site = wp_site()
    hand_deploy(site, "20260101T000000Z", "first")

    assert get(site.url + "/hello-world/").status_code == 200
    assert get(site.url + "/wp/wp-login.php").status_code == 200
    assert get(site.url + "/app/themes/forge-example/style.css").status_code == 200
    assert get(site.url + "/no-such-page/").status_code == 404
    # .env stays private even if it ever lands in the web root.
    assert get(site.url + "/.env").status_code in (403, 404)
    # The dashboard sends visitors to the login page, without a loop.
    admin = get(site.url + "/wp/wp-admin/")
    assert admin.status_code == 200 and admin.url.startswith(site.url + "/wp/wp-login.php")


def test_php_reload_and_shared_env(wp_site: Callable[..., WordPressSite]) -> None:
    site = wp_site()
    release = hand_deploy(site, "r1", "before-reload")
    assert os.readlink(release / ".env") == "../../shared/.env"
    site.reload_php()
    page = get(site.url + "/")
    assert page.status_code == 200, site.logs()
    assert release_line("before-reload") in page.text


def test_preview_serves_next(wp_site: Callable[..., WordPressSite]) -> None:
    site = wp_site(preview=True)
    assert site.preview_url is not None
    hand_deploy(site, "r1", "live")
    hand_deploy(site, "r2", "candidate", install=False)
    switch_link(site.path / "current", "releases/r1")
    switch_link(site.path / "next", "releases/r2")

    preview = requests.get(site.preview_url + "/", timeout=15, allow_redirects=False)
    assert preview.status_code == 200, site.logs()
    assert release_line("candidate") in preview.text
    assert release_line("live") in get(site.url + "/").text


def test_sites_are_independent(wp_site: Callable[..., WordPressSite]) -> None:
    one, two = wp_site(), wp_site()
    assert one.db.name != two.db.name and one.path != two.path and one.port != two.port
    hand_deploy(one, "r1", "one")
    hand_deploy(two, "r1", "two")
    assert release_line("one") in get(one.url + "/").text
    assert release_line("two") in get(two.url + "/").text


def test_deploy_user_reloads_php_over_ssh(
    wp_site: Callable[..., WordPressSite], sshd_host: SshHost
) -> None:
    site = wp_site()
    hand_deploy(site, "r1", "ssh")
    ready = site.php_fpm_log.read_text().count("ready to handle connections")
    done = subprocess.run(
        sshd_host.ssh_argv(site.reload_command), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while site.php_fpm_log.read_text().count("ready to handle connections") == ready:
        assert time.monotonic() < deadline, site.logs()
        time.sleep(0.05)
    assert release_line("ssh") in get(site.url + "/").text
