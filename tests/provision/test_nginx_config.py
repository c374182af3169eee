"""The nginx site provisioning writes is accepted by Debian's real nginx (`nginx -t`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from forge_ci.provision.site import Site
from forge_ci.provision.stack import PREVIEW_PORT, nginx_site


@pytest.mark.parametrize("https", [False, True])
def test_live_and_preview_blocks_pass_nginx_t(tmp_path: Path, https: bool) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    site = Site(project="p", environment="e", server_name="p-e", deploy_user="deploy",
                path="/srv/www/example", php_version="8.3", database="p_e", swap_mb=0,
                ssh_port=22, hostnames=("example.com",), https=https)
    conf = nginx_site(site)
    # Debian's fastcgi_params beside the test config, as /etc/nginx has it.
    shutil.copy("/etc/nginx/fastcgi_params", tmp_path / "fastcgi_params")
    (tmp_path / "site.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ include /etc/nginx/mime.types; include {tmp_path}/site.conf; }}\n")
    done = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "root /srv/www/example/current/web;" in conf
    assert f"listen 127.0.0.1:{PREVIEW_PORT};" in conf
    assert "root /srv/www/example/next/web;" in conf
    assert "fastcgi_param HTTP_HOST example.com;" in conf
    assert ("fastcgi_param HTTPS on;" in conf) == https
    assert conf.count("$realpath_root$fastcgi_script_name") == 2
