"""``provider: ssh``: an existing server forge did not create, brought to the stack.

The pure part: the plan as data (what a probe of the server reads -> changes).
The lab part: a server that starts bare (tests/provision/bare.py says what it is
and what it cannot prove), set up by ``forge-ci provision`` over a real sshd as
root, then a real WordPress deployed there by ``forge-ci deploy`` as the deploy
user; a second provision plans nothing; destroy refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import leaks
from lab.bedrock import make_site, release_line
from lab.policy import lab_required
from lab.sshd import KeyPair, generate_ed25519

from forge_ci.cli import main
from forge_ci.config.models import HostConfig
from forge_ci.errors import ProvisionError
from forge_ci.provision import stack
from forge_ci.provision.base import ServerSpec
from forge_ci.provision.site import Https, Site
from forge_ci.provision.ssh.provider import (
    ServerState,
    desired_files,
    parse_probe,
    plan_changes,
    stamp,
    sudoers_path,
)
from forge_ci.remote.ssh import SshHost, parse_private_key
from tests.provision.bare import BareServer, start_bare_server

INSTALLER = Path(__file__).resolve().parents[1] / "lab" / "wp_install.php"
DEPLOY_USER = "webdeploy"
SITE = Site(project="bare-site", environment="production", server_name="bare-site-production",
            deploy_user=DEPLOY_USER, path="/srv/www/bare-site", php_version="8.2",
            database="bare_site_production", swap_mb=0, ssh_port=22, hostnames=("example.com",),
            tls=Https(names=("example.com",), acme="letsencrypt", email=None, hsts=False))
HOST = HostConfig(host="203.0.113.7", port=22, user=DEPLOY_USER)
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH5dDXZ/6IgxPcZbkXhFMBOfhENP9A+xYD2h6VOT2MhW forge"
SPEC = ServerSpec(name=SITE.server_name, labels={}, ownership={}, ssh_public_key=PUBLIC,
                  ssh_port=22, ssh_sources=())


def _set_up_state(**changes: object) -> ServerState:
    """What the probe reads on a server forge has set up (HTTPS issued)."""
    files = desired_files(SITE, "root")
    state = ServerState(
        os_id="debian", os_version="12", installed=frozenset(stack.packages(SITE)), user=True,
        authorized=True, files={f.path: (f.digest, f.mode) for f in files}, swap=False,
        stamp=stamp(SITE, files, PUBLIC), https="ok 2026-12-06T10:00:00Z example.com")
    return ServerState(**{**state.__dict__, **changes})


def test_a_bare_server_plans_the_whole_stack_in_order() -> None:
    bare = parse_probe("os debian 12\npkg rsync installed\npkg nginx config-files\n")
    plan = plan_changes(SITE, "root", HOST, SPEC, bare)
    kinds = [c.kind for c in plan.changes]
    assert kinds[:3] == ["packages", "user", "authorized_keys"] and kinds[-1] == "setup"
    installing = plan.changes[0].detail["packages"]
    assert "nginx" in installing and "lego" in installing and "rsync" not in installing
    written = {c.name for c in plan.changes if c.kind == "file"}
    assert {stack.SETUP_PATH, "/etc/nginx/sites-available/forge.conf", stack.HTTPS_PATH,
            stack.HTTPS_SETTINGS_PATH, sudoers_path(SITE)} <= written
    assert plan.existing is not None and plan.existing.ipv4 == "203.0.113.7"


def test_a_set_up_server_plans_nothing() -> None:
    assert plan_changes(SITE, "root", HOST, SPEC, _set_up_state()).empty


def test_one_changed_file_rewrites_it_and_runs_setup_again() -> None:
    state = _set_up_state()
    files = dict(state.files)
    files["/etc/nginx/sites-available/forge.conf"] = ("0" * 64, "644")
    plan = plan_changes(SITE, "root", HOST, SPEC, _set_up_state(files=files))
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("update", "file", "/etc/nginx/sites-available/forge.conf"),
        ("update", "setup", stack.SETUP_PATH)]


def test_a_pending_certificate_is_retried_on_the_next_run() -> None:
    plan = plan_changes(SITE, "root", HOST, SPEC,
                        _set_up_state(https="pending 2026-12-06T10:00:00Z example.com"))
    assert [(c.kind, c.detail.get("status")) for c in plan.changes] == [("https", "pending")]


def test_other_systems_are_refused() -> None:
    with pytest.raises(ProvisionError, match="runs centos 9: provider ssh sets up Debian"):
        plan_changes(SITE, "root", HOST, SPEC, parse_probe("os centos 9\n"))


def test_hardening_keeps_the_admin_and_the_servers_host_keys() -> None:
    dropin = stack.sshd_dropin(SITE, "ubuntu")
    assert "AllowUsers webdeploy ubuntu" in dropin and "PermitRootLogin no" in dropin
    assert "HostKey" not in dropin and "PasswordAuthentication no" in dropin
    assert "PermitRootLogin prohibit-password" in stack.sshd_dropin(SITE, "root")


# -- the lab ---------------------------------------------------------------------------

FORGE_YML = """\
version: 1
project: bare-site
environments:
  production:
    url: {url}
    hosts: [{{ host: 127.0.0.1, port: {port}, user: {user} }}]
    path: /srv/www/bare-site
    health_timeout: 20
    https: {{ acme: off }}
    dotenv:
      DB_NAME: bare_site_production
      DB_USER: {user}
      DB_PASSWORD: ""
      DB_HOST: localhost
      WP_ENV: production
      WP_HOME: http://127.0.0.1
      WP_HTTP_BLOCK_EXTERNAL: "true"
      DISABLE_WP_CRON: "true"
provision:
  provider: ssh
  admin_user: root
  ssh_port: 22
  php_version: "8.2"
  swap_mb: 0
"""


@pytest.fixture
def admin_key() -> KeyPair:
    return generate_ed25519("forge-admin")


@pytest.fixture
def bare(admin_key: KeyPair) -> Iterator[BareServer]:
    with lab_required():
        from lab._proc import require_root

        require_root()
        server = start_bare_server(admin_key.public, stack.packages(SITE))
    try:
        yield server
    finally:
        server.stop()


def _forge(src: Path, env: dict[str, str], *args: str,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main([*args, "--config", str(src / "forge.yml")], env=env)
    out = capsys.readouterr()
    leaks.check(out.out + out.err, "forge's output")
    return code, out.out + out.err


def _json(text: str) -> dict[str, object]:
    """The --json document (log lines from stderr may follow it)."""
    doc, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    assert isinstance(doc, dict)
    return doc


@pytest.mark.lab
def test_bare_server_gets_the_stack_then_wordpress_then_nothing_changes(
    bare: BareServer, admin_key: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_key = generate_ed25519("forge-deploy")
    url = f"http://127.0.0.1:{bare.http_port}"
    src = make_site(tmp_path / "src", "v1")
    (src / "forge.yml").write_text(FORGE_YML.format(url=url, port=bare.ssh_port, user=DEPLOY_USER))
    env = {"PATH": "/usr/bin:/bin", "FORGE_SSH_KEY": deploy_key.private,
           "FORGE_ADMIN_SSH_KEY": admin_key.private, "FORGE_KNOWN_HOSTS": bare.known_hosts()}

    # --plan first: the whole stack, and nothing changed on the server.
    code, text = _forge(src, env, "provision", "production", "--plan", "--json",
                        capsys=capsys)
    assert code == 0, text
    plan = _json(text)["plan"]
    assert isinstance(plan, dict)
    kinds = [c["kind"] for c in plan["changes"]]
    assert kinds[:3] == ["packages", "user", "authorized_keys"] and kinds[-1] == "setup"
    assert "apt-get" not in bare.log("apt.log")

    code, text = _forge(src, env, "provision", "production", capsys=capsys)
    assert code == 0, text + bare.log("init.log")
    assert "apt-get install" in bare.log("apt.log")
    # forge-setup ran forge-https (acme: off here: HTTP only, its status says so).
    assert bare.path(stack.HTTPS_STATUS_PATH).read_text().startswith("off ")
    assert "https: off " in text
    dropin = bare.path("/etc/ssh/sshd_config.d/10-forge.conf").read_text()
    assert f"AllowUsers {DEPLOY_USER} root" in dropin
    conf = bare.path("/etc/nginx/sites-available/forge.conf").read_text()
    assert "include /etc/nginx/forge-https/*.conf;" in conf
    assert "listen 127.0.0.1:8081;" in conf
    assert "forge-https" in bare.path("/etc/cron.d/forge-https").read_text()

    # A second run: nothing to change.
    code, text = _forge(src, env, "provision", "production", "--plan", "--json",
                        capsys=capsys)
    assert code == 0, text
    assert _json(text)["plan"] == {**_json(text)["plan"], "changes": []}  # type: ignore[dict-item]

    # forge deploys real WordPress there as the deploy user (no password anywhere).
    code, text = _forge(src, env, "deploy", "production", capsys=capsys)
    assert code == 0, text
    known = bare.known_hosts()
    with SshHost("127.0.0.1", bare.ssh_port, DEPLOY_USER, key=parse_private_key(
            deploy_key.private), known_hosts=known) as host:
        install = host.run(
            "cd /srv/www/bare-site/current && FORGE_INSTALL_ROOT=$PWD "
            "FORGE_INSTALL_URL=http://127.0.0.1 FORGE_INSTALL_TITLE=Bare FORGE_INSTALL_ADMIN=admin "
            "FORGE_INSTALL_PASSWORD=forge-lab-admin FORGE_INSTALL_EMAIL=admin@example.invalid "
            "php -d display_errors=stderr", input=INSTALLER.read_bytes(), check=False)
        assert install.status == 0, install.text + install.stderr.decode()
        # WordPress as visitors of the server get it: port 80 (the relay's port would
        # be a second site address, which WordPress redirects away from).
        front = host.run("curl -s -o - -w '\\n%{http_code}' http://127.0.0.1/", check=False)
    body, _, status = front.text.rpartition("\n")
    assert status == "200", front.text[-500:]
    assert release_line("v1") in body and "</html>" in body

    # Deploying changed nothing provisioning owns.
    code, text = _forge(src, env, "provision", "production", "--plan", "--json",
                        capsys=capsys)
    assert _json(text)["plan"] == {**_json(text)["plan"], "changes": []}  # type: ignore[dict-item]

    code, text = _forge(src, env, "destroy", "production", "--confirm", "bare-site-production",
                        capsys=capsys)
    assert code != 0
    assert "provider ssh does not destroy servers: forge did not create 127.0.0.1" in text


HTTPS_YML = """\
version: 1
project: bare-site
environments:
  production:
    url: https://{name}
    hosts: [{{ host: 127.0.0.1, port: {port}, user: {user} }}]
    path: /srv/www/bare-site
    https: {{ acme: "{directory}", ca_file: {ca}, email: ops@example.com, hsts: true }}
provision:
  provider: ssh
  admin_user: root
  ssh_port: 22
  php_version: "8.2"
  swap_mb: 0
"""


def _get(port: int, host: str) -> str:
    """The status line and headers of GET / from 127.0.0.1:``port`` for ``host``."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode(errors="replace").split("\r\n\r\n")[0]


@pytest.mark.lab
def test_https_pending_until_dns_points_here_then_a_rerun_issues_it(
    admin_key: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import secrets

    from lab._proc import free_port, require_root
    from lab.pebble import running_pebble

    from forge_ci import tls

    with lab_required():
        require_root()
    name = f"shop-{secrets.token_hex(4)}.forge.test"
    http_port = free_port()
    with running_pebble(http_port) as pebble:
        server = start_bare_server(admin_key.public, stack.packages(SITE), http_port=http_port)
        try:
            server.reach(int(pebble.directory.split(":")[2].split("/")[0]))
            root = pebble.write_root(tmp_path / "pebble-root.pem")
            src = tmp_path / "src"
            src.mkdir()
            (src / "forge.yml").write_text(HTTPS_YML.format(
                name=name, port=server.ssh_port, user=DEPLOY_USER, directory=pebble.directory,
                ca=pebble.ca_cert))
            env = {"PATH": "/usr/bin:/bin", "FORGE_SSH_KEY": generate_ed25519().private,
                   "FORGE_ADMIN_SSH_KEY": admin_key.private,
                   "FORGE_KNOWN_HOSTS": server.known_hosts()}

            # DNS does not point here: provisioning succeeds and says what to fix.
            code, text = _forge(src, env, "provision", "production", capsys=capsys)
            assert code == 0, text
            assert f"HTTPS is pending: no certificate for {name} yet" in text
            assert f"Point the DNS A/AAAA records of {name} at 127.0.0.1" in text
            assert " 301 " not in _get(server.http_port, name).split("\r\n")[0]
            assert not tls.inspect(name, server.https_port, address="127.0.0.1",
                                   cafile=root).ok

            # Fixed: the next run plans only the certificate, and issues it.
            pebble.point(name)
            code, text = _forge(src, env, "provision", "production", "--plan", "--json",
                                capsys=capsys)
            plan = _json(text)["plan"]
            assert isinstance(plan, dict)
            assert [c["kind"] for c in plan["changes"]] == ["https"], plan
            code, text = _forge(src, env, "provision", "production", capsys=capsys)
            assert code == 0, text
            assert "HTTPS is pending" not in text and "https: ok " in text
            report = tls.inspect(name, server.https_port, address="127.0.0.1", cafile=root)
            assert report.ok, report.summary()
            assert " 301 " in _get(server.http_port, name).split("\r\n")[0]
            code, text = _forge(src, env, "provision", "production", "--plan", "--json",
                                capsys=capsys)
            assert _json(text)["plan"] == {**_json(text)["plan"], "changes": []}  # type: ignore[dict-item]
        finally:
            server.stop()


@pytest.mark.lab
def test_a_sudo_admin_sets_it_up_too(
    admin_key: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """admin_user: ubuntu (password-less sudo, as cloud images have), not root."""
    with lab_required():
        from lab._proc import require_root

        require_root()
    server = start_bare_server(admin_key.public, stack.packages(SITE), admin_user="ubuntu")
    try:
        src = tmp_path / "src"
        src.mkdir()
        text = FORGE_YML.format(url="http://example.com", port=server.ssh_port,
                                user=DEPLOY_USER).replace("admin_user: root",
                                                          "admin_user: ubuntu")
        (src / "forge.yml").write_text(text)
        env = {"PATH": "/usr/bin:/bin", "FORGE_SSH_KEY": generate_ed25519().private,
               "FORGE_ADMIN_SSH_KEY": admin_key.private,
               "FORGE_KNOWN_HOSTS": server.known_hosts()}
        code, out = _forge(src, env, "provision", "production", capsys=capsys)
        assert code == 0, out
        dropin = server.path("/etc/ssh/sshd_config.d/10-forge.conf").read_text()
        assert f"AllowUsers {DEPLOY_USER} ubuntu" in dropin and "PermitRootLogin no" in dropin
        # The admin still gets in after the hardening, and finds nothing to change.
        code, out = _forge(src, env, "provision", "production", "--plan", "--json",
                           capsys=capsys)
        assert code == 0, out
        assert _json(out)["plan"] == {**_json(out)["plan"], "changes": []}  # type: ignore[dict-item]
    finally:
        server.stop()
