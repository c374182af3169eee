"""A real WordPress serving stack for one deploy path: nginx + PHP-FPM + a database.

Layout, as on a server forge deploys to::

    <path>/current -> releases/<id>   nginx serves <path>/current/web
    <path>/next    -> releases/<id>   the optional preview server serves <path>/next/web

nginx resolves `current` per request ($realpath_root), so a switch is picked up
without an nginx reload. `start_site(symlinked_root=True)` passes the symlinked path
($document_root) instead, the setup where PHP's opcache can keep serving the old
release (with `php_admin={"opcache.validate_timestamps": "0"}` it always does until
something resets it). PHP-FPM's master and workers run as the deploy user:
they can read a 0600 .env, and the deploy user may reload FPM itself
(`reload_command`), the way a sudo rule would allow on a real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    LabError,
    free_port,
    lab_root,
    on_free_port,
    port_open,
    require_binary,
    require_root,
    spawn,
    tail,
    terminate,
    wait_or_stop,
    wait_until,
)
from .mariadb import Database, MariaDB
from .users import DEPLOY_USER, ensure_deploy_user, make_owned_dir

_START_TIMEOUT = 20.0
_NGINX_USER = "www-data"


@dataclass
class WordPressSite:
    """A running stack. `path` is the deploy path, empty until something deploys."""

    path: Path
    url: str
    port: int
    preview_url: str | None
    preview_port: int | None
    db: Database
    workdir: Path
    user: str = DEPLOY_USER
    _mariadb: MariaDB | None = field(default=None, repr=False)
    _fpm: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _nginx: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def php_fpm_pid_file(self) -> Path:
        return self.workdir / "fpm" / "php-fpm.pid"

    @property
    def fpm_socket(self) -> Path:
        """The pool's FastCGI socket (what nginx's fastcgi_pass points at)."""
        return self.workdir / "fpm" / "php-fpm.sock"

    @property
    def php_fpm_log(self) -> Path:
        return self.workdir / "fpm" / "php-fpm.log"

    @property
    def php_error_log(self) -> Path:
        return self.workdir / "fpm" / "php-error.log"

    @property
    def nginx_error_log(self) -> Path:
        return self.workdir / "nginx" / "error.log"

    @property
    def nginx_access_log(self) -> Path:
        return self.workdir / "nginx" / "access.log"

    @property
    def reload_command(self) -> str:
        """A shell command the deploy user can run (e.g. over SSH) to reload PHP-FPM."""
        return f"kill -USR2 \"$(cat '{self.php_fpm_pid_file}')\""

    def dotenv(self, **extra: str) -> dict[str, str]:
        """The .env values this site needs (database, URL), plus `extra`."""
        values = {
            "DB_NAME": self.db.name,
            "DB_USER": self.db.user,
            "DB_PASSWORD": self.db.password,
            "DB_HOST": self.db.host_port,
            "WP_ENV": "production",
            "WP_HOME": self.url,
            # No calls to wordpress.org from tests, and no cron requests
            # interleaving with the ones a test makes.
            "WP_HTTP_BLOCK_EXTERNAL": "true",
            "DISABLE_WP_CRON": "true",
        }
        values.update(extra)
        return values

    def reload_php(self, timeout: float = 15.0) -> None:
        """Gracefully reload PHP-FPM (SIGUSR2) and wait until it serves again."""
        if self._fpm is None or self._fpm.poll() is not None:
            raise LabError(f"PHP-FPM is not running\n{tail(self.php_fpm_log)}")
        before = _count_ready(self.php_fpm_log)
        os.kill(self._fpm.pid, signal.SIGUSR2)
        wait_until(
            lambda: _count_ready(self.php_fpm_log) > before,
            what="PHP-FPM reload",
            timeout=timeout,
            log=self.php_fpm_log,
            proc=self._fpm,
        )

    def logs(self) -> str:
        """Tails of every log, for assertion messages."""
        parts = [self.nginx_error_log, self.php_fpm_log, self.php_error_log]
        return "\n".join(f"--- {log} ---\n{tail(log)}" for log in parts)

    def stop(self) -> None:
        for proc in (self._nginx, self._fpm):
            if proc is not None:
                terminate(proc)
        self._nginx = self._fpm = None

    def close(self) -> None:
        """Stop everything, drop the database, delete the deploy path."""
        self.stop()
        if self._mariadb is not None:
            self._mariadb.drop_database(self.db)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_site(
    mariadb: MariaDB,
    *,
    preview: bool = False,
    php_workers: int = 4,
    symlinked_root: bool = False,
    php_admin: Mapping[str, str] | None = None,
) -> WordPressSite:
    """Start nginx and PHP-FPM for a fresh deploy path and a fresh database.

    `symlinked_root`: nginx gives PHP the path through `current` ($document_root)
    instead of the resolved one. `php_admin`: extra php_admin_value settings for
    the pool, e.g. {"opcache.validate_timestamps": "0"}.
    """
    require_root()
    ensure_deploy_user()
    workdir = lab_root()
    site = WordPressSite(
        path=make_owned_dir(workdir / "srv" / "example"),
        url="",
        port=0,
        preview_url=None,
        preview_port=None,
        db=mariadb.create_database(),
        workdir=workdir,
        _mariadb=mariadb,
    )
    try:
        _start_fpm(site, php_workers, php_admin or {})
        _start_nginx(site, preview, symlinked_root)
    except BaseException:
        site.close()
        raise
    return site


def _start_fpm(site: WordPressSite, workers: int, php_admin: Mapping[str, str]) -> None:
    fpm_dir = make_owned_dir(site.workdir / "fpm", site.user)
    sock = site.fpm_socket
    config = fpm_dir / "php-fpm.conf"
    config.write_text(_fpm_config(fpm_dir, sock, workers, php_admin))
    binary = _php_fpm()
    # FPM opens its own error_log as the deploy user; the console log catches
    # what it prints before that.
    console = fpm_dir / "console.log"
    argv = [binary, "--nodaemonize", "--fpm-config", str(config)]
    site._fpm = spawn(argv, console, user=site.user)
    wait_until(
        lambda: _unix_socket_open(sock),
        what="PHP-FPM",
        timeout=_START_TIMEOUT,
        log=[console, site.php_fpm_log],
        proc=site._fpm,
    )


def _php_fpm() -> str:
    """Debian 12's php-fpm8.2, else the PHP-FPM the distribution ships."""
    preferred = Path("/usr/sbin/php-fpm8.2")
    if preferred.exists():
        return str(preferred)
    others = sorted(Path("/usr/sbin").glob("php-fpm*"))
    return str(others[-1]) if others else require_binary("php-fpm8.2", "package php8.2-fpm")


def _fpm_config(fpm_dir: Path, sock: Path, workers: int, php_admin: Mapping[str, str]) -> str:
    extra = "".join(f"php_admin_value[{k}] = {v}\n" for k, v in php_admin.items())
    return f"""\
[global]
pid = {fpm_dir / "php-fpm.pid"}
error_log = {fpm_dir / "php-fpm.log"}
log_level = notice
daemonize = no
; let workers finish their request on reload instead of cutting it
process_control_timeout = 10s

[site]
listen = {sock}
; nginx workers run as another user
listen.mode = 0666
pm = static
pm.max_children = {workers}
catch_workers_output = yes
decorate_workers_output = no
security.limit_extensions = .php
php_admin_flag[log_errors] = on
php_admin_value[error_log] = {fpm_dir / "php-error.log"}
php_admin_flag[display_errors] = off
{extra}"""


def _start_nginx(site: WordPressSite, preview: bool, symlinked_root: bool) -> None:
    nginx_dir = site.workdir / "nginx"
    (nginx_dir / "tmp").mkdir(parents=True, exist_ok=True)
    root_var = "$document_root" if symlinked_root else "$realpath_root"
    on_free_port(lambda port: _launch_nginx(site, nginx_dir, port, preview, root_var))


def _launch_nginx(
    site: WordPressSite, nginx_dir: Path, port: int, preview: bool, root_var: str
) -> None:
    site.port = port
    site.url = f"http://127.0.0.1:{port}"
    if preview:
        site.preview_port = free_port()
        site.preview_url = f"http://127.0.0.1:{site.preview_port}"
    config = nginx_dir / "nginx.conf"
    config.write_text(_nginx_config(site, nginx_dir, root_var))
    binary = require_binary("nginx", "package nginx")
    argv = [binary, "-p", str(nginx_dir), "-e", str(site.nginx_error_log), "-c", str(config)]
    argv += ["-g", "daemon off;"]
    site._nginx = spawn(argv, nginx_dir / "stderr.log")
    ports = [site.port] + ([site.preview_port] if site.preview_port else [])
    nginx = site._nginx

    def stop() -> None:
        terminate(nginx)
        site._nginx = None

    wait_or_stop(
        lambda: all(port_open(port) for port in ports),
        stop,
        what=f"nginx on {ports}",
        timeout=_START_TIMEOUT,
        log=[nginx_dir / "stderr.log", site.nginx_error_log],
        proc=nginx,
    )


def _nginx_config(site: WordPressSite, nginx_dir: Path, root_var: str) -> str:
    sock = site.fpm_socket
    tmp = nginx_dir / "tmp"
    servers = _server_block(
        site.port, site.path / "current" / "web", "$host:$server_port", root_var
    )
    if site.preview_port:
        # The preview poses as the live host so WordPress, whose home URL is the
        # live one, renders the page instead of redirecting to it.
        servers += _server_block(
            site.preview_port, site.path / "next" / "web", f"$host:{site.port}", root_var
        )
    return f"""\
worker_processes 2;
pid {nginx_dir / "nginx.pid"};
error_log {site.nginx_error_log} notice;
user {_NGINX_USER};

events {{
    worker_connections 1024;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {site.nginx_access_log};
    sendfile on;
    server_tokens off;
    keepalive_timeout 15;
    client_max_body_size 64m;
    client_body_temp_path {tmp / "client_body"};
    fastcgi_temp_path {tmp / "fastcgi"};
    proxy_temp_path {tmp / "proxy"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};

    upstream php {{
        server unix:{sock};
    }}
{servers}}}
"""


def _server_block(port: int, root: Path, http_host: str, root_var: str) -> str:
    # $realpath_root resolves the `current` link per request, so PHP (and its
    # opcache) sees the release directory, never the moving link; $document_root
    # keeps the link in every path PHP sees.
    # HTTP_HOST carries the port: without it WordPress on a non-default port
    # redirects to itself forever. $http_host is client-controlled: never used.
    return f"""
    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1 localhost;
        root {root};
        index index.php index.html;

        location ~ /\\.(?!well-known) {{
            deny all;
        }}
        location ~* /app/uploads/.*\\.php$ {{
            deny all;
        }}
        location / {{
            try_files $uri $uri/ /index.php?$args;
        }}
        location ~ \\.php$ {{
            try_files $uri =404;
            fastcgi_split_path_info ^(.+\\.php)(/.+)$;
            fastcgi_pass php;
            fastcgi_index index.php;
            fastcgi_param SCRIPT_FILENAME {root_var}$fastcgi_script_name;
            fastcgi_param DOCUMENT_ROOT {root_var};
            fastcgi_param HTTP_HOST {http_host};
            fastcgi_param HTTP_PROXY "";
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param HTTPS $https if_not_empty;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param REDIRECT_STATUS 200;
        }}
    }}
"""


def _unix_socket_open(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _count_ready(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("ready to handle connections")
    except OSError:
        return 0
