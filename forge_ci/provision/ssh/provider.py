"""``provider: ssh``: a Debian/Ubuntu server forge did not create, set up over SSH.

forge logs in as ``provision.admin_user`` (root, or a user with password-less
sudo) at the environment's first host, trusting only FORGE_KNOWN_HOSTS, with
FORGE_ADMIN_SSH_KEY (or, when that is not set, FORGE_SSH_KEY). Then, as every
provider (:mod:`forge_ci.provision.base`):

``observe``
    One read-only script: the OS, which of the stack's packages are installed,
    the deploy user and its key, the sha256 and mode of every stack file
    (:func:`forge_ci.provision.stack.files`, the same files cloud-init writes),
    the sudoers rule, swap, the stamp ``forge-setup`` leaves, forge-https's status.
``plan``
    Pure: a :class:`Change` for each missing package set, user, key, file, swap,
    for running ``forge-setup`` (when anything it reads changed, or it never
    completed) and for retrying a certificate that is not issued yet.
``apply``
    apt-get installs, useradd, the files, then ``forge-setup`` (which runs
    forge-https; its exit 3, pending, is a warning saying what to fix).

``destroy`` is refused: forge did not create the server.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import paramiko

from forge_ci.config.models import HostConfig
from forge_ci.config.provision import ProvisionConfig
from forge_ci.errors import ProvisionError, SecretError
from forge_ci.provision import stack
from forge_ci.provision.base import (
    Change,
    Plan,
    Provider,
    Provisioned,
    ServerInfo,
    ServerSpec,
)
from forge_ci.provision.bootstrap import https_advice, https_status
from forge_ci.provision.site import Site
from forge_ci.remote.base import Host

ADMIN_KEY_VAR = "FORGE_ADMIN_SSH_KEY"
STAMP_PATH = "/var/lib/forge-ci/stack.sha256"
SUPPORTED_OS = ("debian", "ubuntu")

Opener = Callable[[], Host]


@dataclass(frozen=True)
class DesiredFile:
    path: str
    content: str
    mode: str  # octal, as stat -c %a prints it ("644", "600")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class ServerState:
    """What ``observe`` read on the server (plain data)."""

    os_id: str
    os_version: str
    installed: frozenset[str]
    user: bool
    authorized: bool
    files: Mapping[str, tuple[str, str]]  # path -> (sha256, mode); absent: missing
    swap: bool
    stamp: str
    https: str | None = None
    notes: tuple[str, ...] = field(default=())


def desired_files(site: Site, admin_user: str) -> list[DesiredFile]:
    """The stack's files plus the deploy user's sudo rule, as the ssh provider writes them."""
    out = [DesiredFile(f.path, f.content, f.mode.lstrip("0") or "0")
           for f in stack.files(site, admin_user=admin_user)]
    sudoers = f"# Written by forge-ci.\n{site.deploy_user} {stack.sudo_rule(site)}\n"
    out.append(DesiredFile(sudoers_path(site), sudoers, "440"))
    return out


def sudoers_path(site: Site) -> str:
    return f"/etc/sudoers.d/forge-{site.deploy_user}"


def stamp(site: Site, files: list[DesiredFile], public_key: str) -> str:
    """What forge-setup was last run for: any change in it runs forge-setup again."""
    text = "\n".join([site.deploy_user, site.path, site.database, public_key,
                      *stack.packages(site), *(f"{f.path} {f.digest} {f.mode}" for f in files)])
    return hashlib.sha256(text.encode()).hexdigest()


def probe_script(site: Site, files: list[DesiredFile], public_key: str) -> str:
    """Read-only: prints ``key value`` lines that :func:`parse_probe` reads."""
    q = shlex.quote
    user = q(site.deploy_user)
    paths = " ".join(q(f.path) for f in files)
    pkgs = " ".join(q(p) for p in stack.packages(site))
    return f"""\
. /etc/os-release 2>/dev/null || true
echo "os ${{ID:-unknown}} ${{VERSION_ID:-}}"
dpkg-query -W -f='pkg ${{Package}} ${{db:Status-Status}}\\n' {pkgs} 2>/dev/null || true
if id -u {user} >/dev/null 2>&1; then
  echo "user yes"
  home=$(getent passwd {user} | cut -d: -f6)
  if grep -qxF -- {q(public_key)} "$home/.ssh/authorized_keys" 2>/dev/null; then
    echo "authorized yes"
  fi
fi
for f in {paths}; do
  if [ -f "$f" ]; then echo "file $f $(sha256sum < "$f" | cut -c1-64) $(stat -c %a "$f")"; fi
done
if [ -n "$(swapon --noheadings --show=NAME 2>/dev/null)" ]; then echo "swap yes"; fi
if [ -f {STAMP_PATH} ]; then echo "stamp $(cat {STAMP_PATH})"; fi
if [ -f {stack.HTTPS_STATUS_PATH} ]; then echo "https $(tail -n 1 {stack.HTTPS_STATUS_PATH})"; fi
"""


def parse_probe(text: str) -> ServerState:
    os_id, os_version, installed, files = "unknown", "", set(), {}
    user = authorized = swap = False
    stamp_value, https = "", None
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "os":
            os_id, _, os_version = rest.partition(" ")
        elif key == "pkg":
            name, _, status = rest.partition(" ")
            if status == "installed":
                installed.add(name)
        elif key == "user":
            user = True
        elif key == "authorized":
            authorized = True
        elif key == "file":
            path, digest, mode = rest.rsplit(" ", 2)
            files[path] = (digest, mode)
        elif key == "swap":
            swap = True
        elif key == "stamp":
            stamp_value = rest.strip()
        elif key == "https":
            https = rest.strip() or None
    return ServerState(os_id=os_id, os_version=os_version, installed=frozenset(installed),
                       user=user, authorized=authorized, files=files, swap=swap,
                       stamp=stamp_value, https=https)


def plan_changes(site: Site, admin_user: str, host: HostConfig, spec: ServerSpec,
                 state: ServerState) -> Plan:
    """Pure: what makes ``state`` forge's stack for ``site``; nothing when it is."""
    if state.os_id not in SUPPORTED_OS:
        raise ProvisionError(
            f"{host.host} runs {state.os_id} {state.os_version}".rstrip()
            + ": provider ssh sets up Debian and Ubuntu only",
            hint="use a Debian 12 or Ubuntu 24.04 server")
    files = desired_files(site, admin_user)
    changes: list[Change] = []
    missing = [p for p in stack.packages(site) if p not in state.installed]
    if missing:
        changes.append(Change("create", "packages", "apt-get install", {"packages": missing}))
    if not state.user:
        changes.append(Change("create", "user", site.deploy_user, {"shell": "/bin/bash"}))
    if not state.authorized:
        changes.append(Change("update", "authorized_keys", site.deploy_user,
                              {"key": "FORGE_SSH_KEY's public half"}))
    for f in files:
        now = state.files.get(f.path)
        if now != (f.digest, f.mode):
            changes.append(Change("create" if now is None else "update", "file", f.path,
                                  {"mode": f.mode}))
    if site.swap_mb and not state.swap:
        changes.append(Change("create", "swap", "/swapfile", {"mb": site.swap_mb}))
    wanted = stamp(site, files, spec.ssh_public_key)
    if changes or state.stamp != wanted:
        changes.append(Change("update", "setup", stack.SETUP_PATH,
                              {"runs": "nginx, PHP-FPM, MariaDB, sshd, HTTPS"}))
    elif (site.tls is not None and site.tls.acme != "off"
          and not (state.https or "").startswith("ok ")):
        changes.append(Change("update", "https", site.tls.names[0],
                              {"status": (state.https or "none").split(" ")[0]}))
    info = ServerInfo(id=f"{host.host}:{host.port}", name=spec.name, status="running",
                      ipv4=host.host, ipv6=None, labels={},
                      server_type=f"{state.os_id} {state.os_version}".strip(),
                      location="existing server (provider ssh)")
    return Plan(provider="ssh", server_name=spec.name, changes=tuple(changes), existing=info)


class SshProvider(Provider[ServerState]):
    name = "ssh"
    boots_from_user_data: ClassVar[bool] = False

    def __init__(self, site: Site, host: HostConfig, admin_user: str, opener: Opener,
                 log: Callable[[str], None]) -> None:
        self.site, self.host, self.admin_user = site, host, admin_user
        self._open, self._log = opener, log
        # root needs no sudo (a minimal Debian may not even have it).
        self._root = "" if admin_user == "root" else "sudo -n "
        self._files = desired_files(site, admin_user)

    @classmethod
    def from_env(cls, config: ProvisionConfig, site: Site, hosts: tuple[HostConfig, ...],
                 environ: Mapping[str, str], log: Callable[[str], None]) -> SshProvider:
        from forge_ci.remote.ssh import SshHost, parse_private_key

        if not hosts:
            raise ProvisionError(
                f"provider ssh needs the server: environments.{site.environment}.hosts is empty",
                hint="list the server: hosts: [{ host: 203.0.113.7, user: deploy }]")
        host = hosts[0]
        key_text = environ.get(ADMIN_KEY_VAR) or environ.get("FORGE_SSH_KEY")
        if not key_text:
            raise SecretError(f"neither {ADMIN_KEY_VAR} nor FORGE_SSH_KEY is set",
                              hint=f"the key {config.admin_user} logs in with on {host.host}")
        known = environ.get("FORGE_KNOWN_HOSTS")
        if not known:
            raise SecretError("FORGE_KNOWN_HOSTS is not set",
                              hint=f"pin the server's host key: ssh-keyscan -p {host.port} "
                                   f"{host.host}, checked against the server's console")
        key: paramiko.PKey = parse_private_key(key_text)

        def opener() -> Host:
            return SshHost(host.host, host.port, config.admin_user, key=key, known_hosts=known,
                           timeout=15.0)

        return cls(site, host, config.admin_user, opener, log)

    def observe(self, spec: ServerSpec) -> ServerState:
        with self._open() as conn:
            script = probe_script(self.site, self._files, spec.ssh_public_key)
            result = conn.run(f"{self._root}sh -s", input=script.encode(), check=False,
                              timeout=120)
            if result.status != 0:
                raise ProvisionError(
                    f"reading {conn.name} failed (exit {result.status}): {result.tail()}",
                    hint=f"{self.admin_user} needs password-less sudo (sudo -n) on the server")
            return parse_probe(result.text)

    def plan(self, spec: ServerSpec, observed: ServerState) -> Plan:
        return plan_changes(self.site, self.admin_user, self.host, spec, observed)

    def apply(self, spec: ServerSpec, plan: Plan) -> Provisioned:
        assert plan.existing is not None
        warnings: list[str] = []
        https: str | None = None
        by_path = {f.path: f for f in self._files}
        with self._open() as conn:
            for change in plan.changes:
                self._log(change.line())
                if change.kind == "packages":
                    self._apt(conn, list(change.detail["packages"]))
                elif change.kind == "user":
                    self._sudo(conn, "useradd --create-home --user-group --shell /bin/bash "
                               + shlex.quote(self.site.deploy_user), "creating the deploy user")
                elif change.kind == "authorized_keys":
                    self._authorize(conn, spec.ssh_public_key)
                elif change.kind == "file":
                    self._write(conn, by_path[change.name])
                elif change.kind == "swap":
                    self._swap(conn)
                elif change.kind in ("setup", "https"):
                    if change.kind == "setup":
                        self._sudo(conn, stack.SETUP_PATH, "forge-setup")
                        wanted = stamp(self.site, self._files, spec.ssh_public_key)
                        self._sudo(conn, f"mkdir -p {shlex.quote(STAMP_PATH.rsplit('/', 1)[0])}"
                                   f" && echo {wanted} > {STAMP_PATH}", "writing the stamp")
                    if self.site.tls is not None:
                        https = https_status(conn, retry_pending=change.kind == "https",
                                             sudo=self._root.strip() or "env")
            if https is None and self.site.tls is not None:
                https = https_status(conn, retry_pending=False)
        advice = https_advice(https, self.host.host)
        if advice:
            warnings.append(advice)
        return Provisioned(server=plan.existing, booted_from_spec=False, https=https,
                           warnings=tuple(warnings))

    def plan_destroy(self, name: str, ownership: Mapping[str, str]) -> Plan:
        raise refuse_destroy(self.host.host)

    def destroy(self, plan: Plan) -> None:
        raise refuse_destroy(self.host.host)

    # -- steps -------------------------------------------------------------

    def _sudo(self, conn: Host, script: str, what: str, data: bytes | None = None) -> None:
        result = conn.run(f"{self._root}sh -c {shlex.quote(script)}", input=data, check=False,
                          timeout=1800)
        if result.status != 0:
            raise ProvisionError(f"{what} failed on {conn.name} (exit {result.status})"
                                 + (f": {result.tail()}" if result.stderr.strip() else ""),
                                 hint="fix the cause on the server and run provision again: "
                                      "it continues from what is there")

    def _apt(self, conn: Host, packages: list[str]) -> None:
        names = " ".join(shlex.quote(p) for p in packages)
        self._sudo(conn, "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
                         "apt-get install -y -q -o Dpkg::Options::=--force-confold "
                         f"--no-install-recommends {names}", f"apt-get install {names}")

    def _authorize(self, conn: Host, public_key: str) -> None:
        u = shlex.quote(self.site.deploy_user)
        self._sudo(conn, f"""set -e
home=$(getent passwd {u} | cut -d: -f6)
install -d -o {u} -g {u} -m 0700 "$home/.ssh"
touch "$home/.ssh/authorized_keys"
grep -qxF -- {shlex.quote(public_key)} "$home/.ssh/authorized_keys" ||
  printf '%s\\n' {shlex.quote(public_key)} >> "$home/.ssh/authorized_keys"
chown {u}:{u} "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
""", "installing the deploy key")

    def _write(self, conn: Host, f: DesiredFile) -> None:
        path = shlex.quote(f.path)
        tmp = shlex.quote(f"{f.path}.forge-tmp")
        check = f"visudo -cqf {tmp} && " if f.path.startswith("/etc/sudoers.d/") else ""
        self._sudo(conn, f"mkdir -p \"$(dirname {path})\" && cat > {tmp} && chmod {f.mode} {tmp}"
                         f" && {check}mv -f {tmp} {path} || {{ rm -f {tmp}; exit 1; }}",
                   f"writing {f.path}", f.content.encode())

    def _swap(self, conn: Host) -> None:
        mb = self.site.swap_mb
        self._sudo(conn, f"""set -e
[ -e /swapfile ] ||
  {{ fallocate -l {mb}M /swapfile || dd if=/dev/zero of=/swapfile bs=1M count={mb}; }}
chmod 0600 /swapfile
mkswap /swapfile >/dev/null
swapon /swapfile
grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >> /etc/fstab
""", "making /swapfile")


def refuse_destroy(host: str) -> ProvisionError:
    return ProvisionError(
        f"provider ssh does not destroy servers: forge did not create {host}",
        hint="remove the site by hand on the server, or delete the server where it is hosted")
