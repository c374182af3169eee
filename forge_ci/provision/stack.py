"""The files that make an Ubuntu 24.04 server a Bedrock host: nginx site, PHP-FPM
pool, sshd drop-in, apt periodic settings, and forge's two root scripts.

Everything here is plain text with ``@NAME@`` placeholders (nginx and shell use
``$`` and braces themselves); :mod:`forge_ci.provision.cloudinit` puts the files
into user data.

The database choice: the site's MariaDB user is the deploy user, authenticated by
the ``unix_socket`` plugin. PHP-FPM runs as that same user and reaches MariaDB
through the socket, so WordPress needs ``DB_USER=<deploy user>``, an empty
``DB_PASSWORD`` and ``DB_HOST=localhost`` — and no password exists anywhere, in
particular not in user data, which stays readable from the server's metadata
service for its whole life.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources

from forge_ci.provision.site import Site

ROTATE_PATH = "/usr/local/sbin/forge-rotate-host-keys"
SETUP_PATH = "/usr/local/sbin/forge-setup"
# Present until the first-boot host key has been replaced (see rotate_script).
FIRST_BOOT_MARKER = "/var/lib/forge-ci/first-boot-host-key"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"
# forge-https (https.sh): the script, its settings, its status line, its nginx snippets.
HTTPS_PATH = "/usr/local/sbin/forge-https"
HTTPS_SETTINGS_PATH = "/etc/forge-https.env"
HTTPS_STATUS_PATH = "/var/lib/forge-https/status"
HTTPS_DIR = "/etc/nginx/forge-https"
# forge-https's exit status when the CA could not validate yet (DNS not pointing here).
HTTPS_PENDING = 3


def fpm_service(site: Site) -> str:
    return f"php{site.php_version}-fpm"


def fpm_socket(site: Site) -> str:
    return f"/run/php/php{site.php_version}-fpm-forge.sock"


def packages(site: Site) -> list[str]:
    php = f"php{site.php_version}"
    return ["nginx", f"{php}-fpm", f"{php}-cli", f"{php}-mysql", f"{php}-curl", f"{php}-gd",
            f"{php}-intl", f"{php}-mbstring", f"{php}-xml", f"{php}-zip", f"{php}-bcmath",
            "mariadb-server", "mariadb-client", "unattended-upgrades", "rsync", "lego", "sudo"]


def sudo_rule(site: Site) -> str:
    """The deploy user's whole sudo: reload PHP and nginx, rotate the host key once,
    and run forge-https (it takes its settings from its root-owned file only)."""
    commands = [f"/usr/bin/systemctl reload {fpm_service(site)}",
                "/usr/bin/systemctl reload nginx", ROTATE_PATH]
    if site.tls is not None:
        commands.append(HTTPS_PATH)
    return "ALL=(root) NOPASSWD: " + ", ".join(commands)


_SERVER = """\
server {
@LISTEN@
    server_name @NAMES@;
    root @ROOT@;
    index index.php index.html;
    client_max_body_size 64m;
    server_tokens off;

    location ~ /\\.(?!well-known/) { deny all; }
    # Uploads are data: never run PHP from them.
    location ~* ^/app/uploads/.*\\.php$ { deny all; }

    location / {
        try_files $uri $uri/ /index.php?$args;
    }

    location ~ \\.php$ {
        try_files $uri =404;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
@PARAMS@        fastcgi_pass unix:@SOCKET@;
    }
@INCLUDE@}
"""

PREVIEW_PORT = 8081


def _server(listen: list[str], names: str, root: str, params: list[str], socket: str,
            include: str = "") -> str:
    return (_SERVER.replace("@LISTEN@", "\n".join(f"    listen {x};" for x in listen))
            .replace("@NAMES@", names).replace("@ROOT@", root).replace("@SOCKET@", socket)
            .replace("@PARAMS@", "".join(f"        fastcgi_param {x};\n" for x in params))
            .replace("@INCLUDE@", include))


LIVE_LISTEN = ("80 default_server", "[::]:80 default_server")


def nginx_site(site: Site, *, live_listen: tuple[str, ...] = LIVE_LISTEN,
               preview_listen: str = f"127.0.0.1:{PREVIEW_PORT}",
               https_dir: str = HTTPS_DIR) -> str:
    """The site's nginx server blocks. The keywords exist for the lab (its own ports
    and directories); a server always gets the defaults."""
    socket = fpm_socket(site)
    # forge-https writes the TLS part (listen 443, certificate, redirect, ACME webroot)
    # here; with no snippet (acme off, or before the first run) the site is plain HTTP.
    include = ("    # HTTPS: written by forge-https (empty until it has run).\n"
               f"    include {https_dir}/*.conf;\n")
    live = _server(list(live_listen), " ".join(site.hostnames) or "_",
                   f"{site.path}/current/web", [], socket, include)
    # It poses as the live host so WordPress renders instead of redirecting home.
    params = [f"HTTP_HOST {site.hostnames[0] if site.hostnames else '$host'}"]
    if site.https:
        params.append("HTTPS on")
    # No include: the preview stays plain HTTP on the loopback.
    preview = _server([preview_listen], "_", f"{site.path}/next/web", params, socket)
    return (
        "# Written by forge-ci. Releases go live by renaming current, so PHP is given\n"
        "# resolved paths ($realpath_root): each release keeps its own opcache keys.\n"
        + live
        + "\n# The preview route: <path>/next is the release about to go live, on loopback\n"
        "# only; forge checks it over SSH (preview: {url: http://127.0.0.1:8081,\n"
        "# on_host: true}) before the switch, so a bad release never reaches visitors.\n"
        + preview
    )


_POOL = """\
; Written by forge-ci. The site's PHP runs as the deploy user, who owns the releases.
[forge]
user = @USER@
group = @USER@
listen = @SOCKET@
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = dynamic
pm.max_children = 8
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
pm.max_requests = 500
php_admin_value[upload_max_filesize] = 64M
php_admin_value[post_max_size] = 64M
"""


def fpm_pool(site: Site) -> str:
    return _POOL.replace("@USER@", site.deploy_user).replace("@SOCKET@", fpm_socket(site))


def sshd_dropin(site: Site, admin_user: str | None = None) -> str:
    """sshd hardening. ``admin_user`` (provider ssh) keeps the account forge sets the
    server up with allowed (by key only), and the server keeps its own host keys."""
    # Read before sshd_config's own settings (first value wins), so these hold.
    users = [site.deploy_user] + ([admin_user] if admin_user else [])
    lines = [
        "# Written by forge-ci: keys only, " + (
            "no root" if admin_user != "root" else "root by key only") + ", only "
        + " and ".join(users) + ".",
        f"Port {site.ssh_port}",
        "PermitRootLogin " + ("prohibit-password" if admin_user == "root" else "no"),
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "AuthenticationMethods publickey",
        f"AllowUsers {' '.join(users)}",
    ]
    if admin_user is None:
        lines.append(f"HostKey {HOST_KEY_PATH}")
    return "\n".join([*lines, "X11Forwarding no", "AllowAgentForwarding no", ""])


AUTO_UPGRADES = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'


_SETUP = """\
#!/bin/sh
# forge-setup: finish the Bedrock stack once cloud-init has installed the packages.
# Idempotent: running it again changes nothing.
set -eu
root=@ROOT@
user=@USER@

# The deploy layout: releases and shared data belong to the deploy user.
mkdir -p -- "$root"
chown "$user:$user" "$root"
chmod 0755 "$root"
install -d -o "$user" -g "$user" -m 0755 "$root/releases" "$root/shared"
install -d -o "$user" -g "$user" -m 0750 "$root/.forge"

# nginx and PHP-FPM serve forge's site only.
rm -f /etc/nginx/sites-enabled/default
ln -sfn ../sites-available/forge.conf /etc/nginx/sites-enabled/forge.conf
nginx -t
systemctl reload-or-restart nginx
rm -f @POOLDIR@/www.conf
@FPMBIN@ -t
systemctl restart @FPM@

# The site's database. No password: the deploy user (PHP runs as it) logs in
# through the unix socket, so nothing secret is in user data.
mariadb <<'SQL'
CREATE DATABASE IF NOT EXISTS `@DB@` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '@USER@'@'localhost' IDENTIFIED VIA unix_socket;
GRANT ALL PRIVILEGES ON `@DB@`.* TO '@USER@'@'localhost';
SQL

systemctl enable --now unattended-upgrades.service

# sshd: apply forge's drop-in. A port other than 22 also needs Ubuntu's ssh.socket
# regenerated from sshd_config.
sshd -t
if [ "@PORT@" != 22 ] && systemctl is-enabled --quiet ssh.socket 2>/dev/null; then
    systemctl daemon-reload
    systemctl restart ssh.socket
fi
systemctl try-reload-or-restart ssh.service

# HTTPS for the site's names (settings in @HTTPS_ENV@). Exit 3 is "pending" (the DNS
# does not point here yet): the site serves HTTP and forge-https's timer retries.
if [ -x @HTTPS@ ] && [ -e @HTTPS_ENV@ ]; then
    @HTTPS@ || [ $? -eq 3 ]
fi
"""


def setup_script(site: Site) -> str:
    replacements = {
        "@ROOT@": shlex.quote(site.path),
        "@USER@": site.deploy_user,  # validated: [a-z_][a-z0-9_-]*
        "@POOLDIR@": f"/etc/php/{site.php_version}/fpm/pool.d",
        "@FPMBIN@": f"php-fpm{site.php_version}",
        "@FPM@": fpm_service(site),
        "@DB@": site.database,  # validated: [A-Za-z0-9_]+
        "@PORT@": str(site.ssh_port),
        "@HTTPS@": HTTPS_PATH,
        "@HTTPS_ENV@": HTTPS_SETTINGS_PATH,
    }
    text = _SETUP
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


_ROTATE = """\
#!/bin/sh
# forge-rotate-host-keys: the first-boot host key came in user data, which stays
# readable from the metadata service. Replace it once with a key made here, then
# print the current public key (forge pins it). Safe to run again.
set -eu
key=@KEY@
if [ -e @MARKER@ ]; then
    umask 077
    tmp=$(mktemp -d "$(dirname "$key")/.forge-hostkey.XXXXXX")
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$tmp/key"
    chmod 0644 "$tmp/key.pub"
    mv -f "$tmp/key" "$key"
    mv -f "$tmp/key.pub" "$key.pub"
    rmdir "$tmp"
    @RELOAD@
    rm -f @MARKER@
fi
cat "$key.pub"
"""

REAL_RELOAD = "sshd -t && systemctl reload-or-restart ssh.service"


def rotate_script(*, key: str = HOST_KEY_PATH, marker: str = FIRST_BOOT_MARKER,
                  reload: str = REAL_RELOAD) -> str:
    """The host key rotation script. Tests build it with lab paths and a lab reload."""
    return (_ROTATE.replace("@KEY@", shlex.quote(key)).replace("@MARKER@", shlex.quote(marker))
            .replace("@RELOAD@", reload))


def https_script() -> str:
    """forge-https (``https.sh``), as shipped in the package."""
    return resources.files("forge_ci.provision").joinpath("https.sh").read_text()


@dataclass(frozen=True)
class StackFile:
    """One file of the stack: the same list feeds cloud-init and the ``ssh`` provider."""

    path: str
    content: str
    mode: str = "0644"
    # Written after the packages are installed (a package would overwrite it).
    after_packages: bool = False


def files(site: Site, *, admin_user: str | None = None) -> list[StackFile]:
    """Every file forge puts on a server for ``site``, except the first-boot marker
    and rotation script (cloud-init only). ``admin_user``: see :func:`sshd_dropin`."""
    out = [
        StackFile("/etc/ssh/sshd_config.d/10-forge.conf", sshd_dropin(site, admin_user)),
        StackFile(SETUP_PATH, setup_script(site), "0700"),
        StackFile("/etc/apt/apt.conf.d/20auto-upgrades", AUTO_UPGRADES),
        StackFile("/etc/nginx/sites-available/forge.conf", nginx_site(site),
                  after_packages=True),
        StackFile(f"/etc/php/{site.php_version}/fpm/pool.d/forge.conf", fpm_pool(site),
                  after_packages=True),
    ]
    if site.tls is not None:
        out += [StackFile(HTTPS_PATH, https_script(), "0755"),
                StackFile(HTTPS_SETTINGS_PATH, site.tls.settings(), "0600")]
    return out
