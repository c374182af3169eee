"""The cloud-init user data: valid for cloud-init, small enough for Hetzner, and
holding the stack, the hardening and the first-boot key — but no password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lab import require_binary
from lab.policy import lab_required

from forge_ci.provision import cloudinit, stack
from forge_ci.provision.hostkeys import generate_host_key
from forge_ci.provision.site import Https, Site

SITE = Site(project="example-site", environment="production",
            server_name="example-site-production", deploy_user="deploy",
            path="/srv/www/example.com", php_version="8.3", database="example_site_production",
            swap_mb=2048, ssh_port=22, hostnames=("example.com",))
DEPLOY_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH5dDXZ/6IgxPcZbkXhFMBOfhENP9A+xYD2h6VOT2MhW"
              " forge-ci")
HOST_KEY = generate_host_key()
TEXT = cloudinit.user_data(SITE, DEPLOY_KEY, HOST_KEY)
DOC: dict[str, Any] = yaml.safe_load(TEXT)


def files() -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in DOC["write_files"]}


def need(binary: str) -> str:
    """The lab's binary, or a failure (a skip only with FORGE_LAB_ALLOW_SKIP=1)."""
    with lab_required():
        return require_binary(binary)


@pytest.mark.lab
def test_cloud_init_schema_accepts_it_and_it_fits_hetzner(tmp_path: Path) -> None:
    assert TEXT.startswith("#cloud-config\n")
    assert len(TEXT.encode()) < 32 * 1024
    path = tmp_path / "user-data"
    path.write_text(TEXT)
    done = subprocess.run([need("cloud-init"), "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid cloud-config" in done.stdout


def test_no_database_password_anywhere() -> None:
    setup = files()[stack.SETUP_PATH]["content"]
    assert "IDENTIFIED VIA unix_socket" in setup
    assert "IDENTIFIED BY" not in TEXT and "DB_PASSWORD" not in TEXT
    assert "CREATE DATABASE IF NOT EXISTS `example_site_production`" in setup
    assert "GRANT ALL PRIVILEGES ON `example_site_production`.* TO 'deploy'@'localhost'" in setup


def test_first_boot_host_key_and_ssh_hardening() -> None:
    assert DOC["ssh_keys"] == {"ed25519_private": HOST_KEY.private,
                               "ed25519_public": HOST_KEY.public}
    assert DOC["ssh_deletekeys"] is True and DOC["ssh_genkeytypes"] == ["ed25519"]
    assert DOC["disable_root"] is True and DOC["ssh_pwauth"] is False
    dropin = files()["/etc/ssh/sshd_config.d/10-forge.conf"]["content"]
    for line in ("PermitRootLogin no", "PasswordAuthentication no", "AllowUsers deploy",
                 "KbdInteractiveAuthentication no", "Port 22"):
        assert line in dropin.splitlines()
    assert stack.FIRST_BOOT_MARKER in files()


def test_deploy_user_logs_in_by_key_and_sudo_is_only_reloads_and_rotation() -> None:
    user = DOC["users"][0]
    assert user["name"] == "deploy" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [DEPLOY_KEY]
    allowed = user["sudo"].removeprefix("ALL=(root) NOPASSWD: ").split(", ")
    assert allowed == ["/usr/bin/systemctl reload php8.3-fpm", "/usr/bin/systemctl reload nginx",
                       stack.ROTATE_PATH]


def test_stack_packages_swap_upgrades_and_layout() -> None:
    assert {"nginx", "php8.3-fpm", "php8.3-mysql", "mariadb-server",
            "unattended-upgrades"} <= set(DOC["packages"])
    assert DOC["swap"] == {"filename": "/swapfile", "size": 2 << 30, "maxsize": 2 << 30}
    assert 'Unattended-Upgrade "1"' in files()["/etc/apt/apt.conf.d/20auto-upgrades"]["content"]
    setup = files()[stack.SETUP_PATH]["content"]
    assert 'install -d -o "$user" -g "$user" -m 0755 "$root/releases" "$root/shared"' in setup
    assert 'install -d -o "$user" -g "$user" -m 0750 "$root/.forge"' in setup
    assert "root=/srv/www/example.com" in setup and "user=deploy" in setup
    assert DOC["runcmd"] == [[stack.SETUP_PATH]]


@pytest.mark.lab
def test_nginx_serves_current_web_with_realpath_root(tmp_path: Path) -> None:
    site = files()["/etc/nginx/sites-available/forge.conf"]
    assert site["defer"] is True  # after the nginx package, so it is not overwritten
    conf = site["content"]
    assert "root /srv/www/example.com/current/web;" in conf
    assert "fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;" in conf
    assert "fastcgi_param DOCUMENT_ROOT $realpath_root;" in conf
    assert "server_name example.com;" in conf
    # nginx itself agrees it is valid.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/site.conf").write_text(conf)
    shutil.copy("/etc/nginx/fastcgi_params", tmp_path / "conf/fastcgi_params")
    (tmp_path / "conf/nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp { include site.conf; }\n")
    done = subprocess.run([need("nginx"), "-t", "-p", str(tmp_path), "-c", "conf/nginx.conf"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.lab
def test_php_pool_runs_as_the_deploy_user(tmp_path: Path) -> None:
    pool = files()["/etc/php/8.3/fpm/pool.d/forge.conf"]["content"]
    assert "user = deploy\ngroup = deploy\n" in pool
    assert "listen = /run/php/php8.3-fpm-forge.sock" in pool
    assert "fastcgi_pass unix:/run/php/php8.3-fpm-forge.sock;" in (
        files()["/etc/nginx/sites-available/forge.conf"]["content"])
    # php-fpm parses it (the lab's version; accounts swapped for ones this machine has).
    fpm = next(iter(sorted(Path("/usr/sbin").glob("php-fpm*"))), None) or need("php-fpm")
    local = pool.replace("= deploy", "= nobody").replace("group = nobody", "group = nogroup")
    conf = tmp_path / "fpm.conf"
    conf.write_text(f"[global]\nerror_log = {tmp_path}/fpm.log\n" + local)
    done = subprocess.run([str(fpm), "-t", "-y", str(conf)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", [stack.SETUP_PATH, stack.ROTATE_PATH])
def test_root_scripts_are_valid_shell(path: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(files()[path]["content"])
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert files()[path]["permissions"] in ("0700", "0755")


def test_other_ports_php_versions_and_no_swap() -> None:
    site = Site(**{**SITE.__dict__, "ssh_port": 2222, "php_version": "8.2", "swap_mb": 0,
                   "hostnames": ()})
    doc = yaml.safe_load(cloudinit.user_data(site, DEPLOY_KEY, HOST_KEY))
    by_path = {f["path"]: f["content"] for f in doc["write_files"]}
    assert "Port 2222" in by_path["/etc/ssh/sshd_config.d/10-forge.conf"]
    assert "/etc/php/8.2/fpm/pool.d/forge.conf" in by_path
    assert "server_name _;" in by_path["/etc/nginx/sites-available/forge.conf"]
    assert "swap" not in doc


# HTTPS (issue 17): forge-https and its settings ride in the same user data.
TLS_SITE = Site(**{**SITE.__dict__, "https": True, "hostnames": ("example.com",),
                   "tls": Https(names=("example.com", "www.example.com"), acme="letsencrypt",
                                email="ops@example.com", hsts=True)})
TLS_TEXT = cloudinit.user_data(TLS_SITE, DEPLOY_KEY, HOST_KEY)
TLS_DOC: dict[str, Any] = yaml.safe_load(TLS_TEXT)


@pytest.mark.lab
def test_with_https_it_still_passes_the_schema_and_fits_hetzner(tmp_path: Path) -> None:
    assert len(TLS_TEXT.encode()) < cloudinit.MAX_BYTES
    path = tmp_path / "user-data"
    path.write_text(TLS_TEXT)
    done = subprocess.run([need("cloud-init"), "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid cloud-config" in done.stdout


def test_https_script_settings_and_run_after_nginx() -> None:
    by_path = {f["path"]: f for f in TLS_DOC["write_files"]}
    script = by_path[stack.HTTPS_PATH]
    assert script["encoding"] == "gz+b64" and script["permissions"] == "0755"
    # Decoded, it is forge-https byte for byte.
    shipped = (Path(__file__).resolve().parents[2] / "forge_ci/provision/https.sh").read_text()
    assert cloudinit.file_content(script) == shipped
    settings = by_path[stack.HTTPS_SETTINGS_PATH]
    assert settings["permissions"] == "0600"
    assert settings["content"].splitlines() == [
        "FORGE_HTTPS_DOMAINS='example.com www.example.com'", "FORGE_HTTPS_ACME=letsencrypt",
        "FORGE_HTTPS_HSTS=true", "FORGE_HTTPS_EMAIL=ops@example.com"]
    setup = by_path[stack.SETUP_PATH]["content"]
    # forge-https runs after nginx is reloaded, and "pending" (3) does not fail the boot.
    assert setup.index("systemctl reload-or-restart nginx") < setup.index(
        f"{stack.HTTPS_PATH} || [ $? -eq 3 ]")
    assert "lego" in TLS_DOC["packages"]
    assert TLS_DOC["users"][0]["sudo"].endswith(f", {stack.HTTPS_PATH}")


def test_only_the_live_block_includes_the_https_snippet() -> None:
    conf = {f["path"]: f for f in TLS_DOC["write_files"]}[
        "/etc/nginx/sites-available/forge.conf"]["content"]
    live, preview = conf.split("# The preview route")
    assert "include /etc/nginx/forge-https/*.conf;" in live
    assert "forge-https" not in preview and "listen 127.0.0.1:8081;" in preview


def test_without_https_no_script_is_written() -> None:
    assert stack.HTTPS_PATH not in files()
    assert stack.HTTPS_SETTINGS_PATH not in files()
    assert stack.HTTPS_PATH not in DOC["users"][0]["sudo"]
