"""Several web servers behind a real nginx load balancer, all on loopback.

As in a multi-server WordPress setup: each "host" runs its own nginx, serving
its own ``<site>/current/web`` (and ``<site>/next/web``, the preview route)
through PHP-FPM, and one more nginx balances the site's URL over them, round
robin. The hosts listen on their own loopback addresses (127.0.0.2, .3, ...)
at the same ports as the site and preview URLs (which live on 127.0.0.1), the
way backends answer the URL's port on their own address, so forge's per-host
checks can reach each one at ``check_address`` while the URL goes through the
balancer. One PHP-FPM pool serves every host: each host's paths are its own
directories, so no host can see another's release.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    LabError,
    lab_root,
    port_open,
    require_binary,
    require_root,
    spawn,
    terminate,
    wait_until,
)
from .site import _fpm_config, _php_fpm, _unix_socket_open
from .users import DEPLOY_USER, ensure_deploy_user, make_owned_dir

_START_TIMEOUT = 20.0


@dataclass
class Balanced:
    """Running servers. ``url``/``preview_url`` are what forge.yml names;
    ``addresses[i]`` is where host i's own web server listens."""

    url: str
    preview_url: str
    port: int
    preview_port: int
    addresses: list[str]
    workdir: Path
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def logs(self) -> str:
        out = []
        for log in sorted(self.workdir.glob("**/*.log")):
            out.append(f"--- {log} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def close(self) -> None:
        for proc in reversed(self._procs):
            terminate(proc)
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_balanced(sites: Sequence[Path], *, user: str = DEPLOY_USER) -> Balanced:
    """Serve each of ``sites`` (a deploy path seen from outside its host) on its own
    nginx, and balance them. Ports are chosen free on every address used."""
    require_root()
    ensure_deploy_user(user)
    workdir = lab_root()
    addresses = [f"127.0.0.{2 + i}" for i in range(len(sites))]
    port, preview_port = _free_ports(["127.0.0.1", *addresses], 2)
    bal = Balanced(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{preview_port}", port,
                   preview_port, addresses, workdir)
    try:
        sock = _start_fpm(bal, user)
        for i, (site, address) in enumerate(zip(sites, addresses, strict=True)):
            servers = (_php_server(address, port, site / "current/web", sock, port)
                       + _php_server(address, preview_port, site / "next/web", sock, port))
            _start_nginx(bal, f"host{i}", servers, [(address, port), (address, preview_port)])
        upstream = "".join(f"        server {a}:{port} max_fails=0;\n" for a in addresses)
        _start_nginx(bal, "balancer", f"""
    upstream hosts {{
{upstream}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hosts;
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
""", [("127.0.0.1", port)])
    except BaseException:
        bal.close()
        raise
    return bal


def _free_ports(addresses: Sequence[str], n: int) -> list[int]:
    """``n`` ports free on every one of ``addresses`` (the balancer and each host
    listen on the same port number, each on its own address)."""
    found: list[int] = []
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            candidate = int(probe.getsockname()[1])
        if candidate in found or any(port_open(candidate, a) for a in addresses):
            continue
        try:
            for a in addresses:
                with socket.socket() as s:
                    s.bind((a, candidate))
        except OSError:
            continue
        found.append(candidate)
        if len(found) == n:
            return found
    raise LabError("no port free on every loopback address")


def _start_fpm(bal: Balanced, user: str) -> Path:
    fpm_dir = make_owned_dir(bal.workdir / "fpm", user)
    sock = fpm_dir / "php-fpm.sock"
    config = fpm_dir / "php-fpm.conf"
    config.write_text(_fpm_config(fpm_dir, sock, 6, {}))
    console = fpm_dir / "console.log"
    proc = spawn([_php_fpm(), "--nodaemonize", "--fpm-config", str(config)], console,
                 user=user)
    bal._procs.append(proc)
    wait_until(lambda: _unix_socket_open(sock), what="PHP-FPM", timeout=_START_TIMEOUT,
               log=console, proc=proc)
    return sock


def _php_server(address: str, port: int, root: Path, sock: Path, site_port: int) -> str:
    # $realpath_root: each request resolves `current`, so a switch needs no reload.
    return f"""
    server {{
        listen {address}:{port};
        root {root};
        index index.php index.html;
        location / {{
            try_files $uri $uri/ /index.php?$args;
        }}
        location ~ \\.php$ {{
            try_files $uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:{sock};
            fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
            fastcgi_param DOCUMENT_ROOT $realpath_root;
            fastcgi_param HTTP_HOST 127.0.0.1:{site_port};
        }}
    }}
"""


def _start_nginx(bal: Balanced, name: str, servers: str,
                 listens: Sequence[tuple[str, int]]) -> None:
    d = bal.workdir / name
    (d / "tmp").mkdir(parents=True)
    tmp = d / "tmp"
    config = d / "nginx.conf"
    config.write_text(f"""\
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} notice;
user www-data;
events {{
    worker_connections 512;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d / "access.log"};
    keepalive_timeout 15;
    client_body_temp_path {tmp / "client_body"};
    fastcgi_temp_path {tmp / "fastcgi"};
    proxy_temp_path {tmp / "proxy"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};
{servers}}}
""")
    binary = require_binary("nginx", "package nginx")
    argv = [binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(config),
            "-g", "daemon off;"]
    proc = spawn(argv, d / "stderr.log")
    bal._procs.append(proc)
    wait_until(lambda: all(port_open(p, a) for a, p in listens), what=f"nginx {name}",
               timeout=_START_TIMEOUT, log=[d / "stderr.log", d / "error.log"], proc=proc)
