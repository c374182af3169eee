"""A lab server that starts bare, for ``provider: ssh``: this machine, seen over a real sshd.

What it is: a process tree in its own mount, network and PID namespaces
(``unshare``), where

- ``/etc``, ``/usr/local``, ``/var/lib``, ``/var/log``, ``/home`` and ``/root`` are
  overlays whose upper layers live in the lab directory, and ``/srv`` and ``/run``
  are fresh: every file forge writes lands there, never on this machine;
- the stack's Debian packages are *forgotten* in dpkg's database (marked
  ``config-files``), MariaDB has no data directory, there is no deploy user:
  forge's probe sees a server without the stack;
- ``apt-get`` is a recording stand-in that "installs" only packages really
  installed on this machine (it marks them installed again and runs what their
  maintainer scripts would start: the MariaDB data directory and server,
  nginx, PHP-FPM); any other package fails as apt would;
- ``systemctl`` is a stand-in that starts, reloads and restarts nginx, PHP-FPM,
  MariaDB and sshd as plain processes (there is no systemd here), and records
  the rest (timers, unattended-upgrades);
- a real OpenSSH server (the machine's own ``/etc/ssh/sshd_config``, with the
  drop-ins forge writes) listens on port 22 and nginx on port 80 of the
  namespace's own loopback. ``socat`` relays 127.0.0.1 ports of this machine to
  them through unix sockets in the lab directory (like a NAT port forward).

What it cannot prove: that ``apt-get install`` on a bare Debian pulls these
packages in and that their real maintainer scripts and systemd units behave as
the stand-ins do. Everything after the packages (users, files, sudoers with
visudo, forge-setup, sshd reload, MariaDB over unix_socket, forge-https, the
deploy) is the real thing.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab._proc import free_port, lab_root, require_binary, spawn, terminate, wait_until

OVERLAYS = ("etc", "usr/local", "var/lib", "var/log", "home", "root")

_INIT = r"""#!/bin/bash
# The lab server's init (PID 1 of its namespace): mounts, a bare state, sshd, relays.
set -euo pipefail
W=@W@
mount --make-rprivate /
for d in @OVERLAYS@; do
  n=${d//\//_}
  mkdir -p "$W/upper/$n" "$W/work/$n"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/upper/$n,workdir=$W/work/$n" "/$d"
done
mkdir -p /srv "$W/srv"
mount --bind "$W/srv" /srv
mount -t tmpfs tmpfs /run
mkdir -p /run/sshd /run/php /run/mysqld
chown mysql:mysql /run/mysqld
ip link set lo up

# Bare: the stack's packages forgotten, no database server data, no site config.
python3 "$W/dpkg_state.py" forget @PACKAGES@
rm -rf /var/lib/mysql
rm -f /etc/ssh/sshd_config.d/*
install -m 0755 "$W/systemctl" /usr/local/sbin/systemctl
install -m 0755 "$W/apt-get" /usr/local/sbin/apt-get

# The server's own host keys and the admin's login.
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key
admin=@ADMIN@
if [ "$admin" = root ]; then
  install -d -m 0700 /root/.ssh
  install -m 0600 "$W/admin.pub" /root/.ssh/authorized_keys
else
  # A cloud image's admin: its own account with password-less sudo.
  useradd --create-home --shell /bin/bash "$admin"
  install -d -o "$admin" -g "$admin" -m 0700 "/home/$admin/.ssh"
  install -o "$admin" -g "$admin" -m 0600 "$W/admin.pub" "/home/$admin/.ssh/authorized_keys"
  echo "$admin ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/90-$admin"
  chmod 0440 "/etc/sudoers.d/90-$admin"
fi
/usr/sbin/sshd -E "$W/sshd.log"

socat "UNIX-LISTEN:$W/ssh.sock,fork,mode=0600" TCP:127.0.0.1:22 &
socat "UNIX-LISTEN:$W/http.sock,fork,mode=0600" TCP:127.0.0.1:80 &
socat "UNIX-LISTEN:$W/https.sock,fork,mode=0600" TCP:127.0.0.1:443 &
touch "$W/ready"
wait
"""

_DPKG_STATE = r"""
# forget|restore PACKAGE...: mark packages not installed / installed in dpkg's status.
import sys
mode, names = sys.argv[1], set(sys.argv[2:])
path = "/var/lib/dpkg/status"
stanzas = open(path).read().split("\n\n")
new, old = (("Status: deinstall ok config-files", "Status: install ok installed")
            if mode == "forget" else
            ("Status: install ok installed", "Status: deinstall ok config-files"))
seen = set()
for i, s in enumerate(stanzas):
    lines = s.split("\n")
    pkg = next((ln[9:] for ln in lines if ln.startswith("Package: ")), None)
    if pkg in names and old in lines:
        stanzas[i] = "\n".join(new if ln == old else ln for ln in lines)
        seen.add(pkg)
open(path, "w").write("\n\n".join(stanzas))
missing = names - seen
if missing and mode == "restore":
    sys.exit("E: Unable to locate package " + " ".join(sorted(missing))
             + " (the lab installs only packages this machine has)")
"""

_APT = r"""#!/bin/bash
# Lab apt-get: records the call; "installs" only what this machine really has.
W=@W@
echo "apt-get $*" >> "$W/apt.log"
[ "${1:-}" = install ] || exit 0
pkgs=()
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in -o|-t|-c) skip=1 ;; install|-*) ;; *) pkgs+=("$a") ;; esac
done
python3 "$W/dpkg_state.py" restore "${pkgs[@]}" || exit 100
for p in "${pkgs[@]}"; do
  case "$p" in
    mariadb-server)
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$W/apt.log" 2>&1
      systemctl start mariadb ;;
    nginx) systemctl start nginx ;;
    php*-fpm) systemctl start "$p" ;;
  esac
done
"""

_SYSTEMCTL = r"""#!/bin/bash
# Lab systemctl: services as plain processes (no systemd in the lab).
W=@W@
echo "systemctl $*" >> "$W/systemctl.log"
args=(); for a in "$@"; do case "$a" in -*) ;; *) args+=("$a") ;; esac; done
verb="${args[0]:-}"; unit="${args[1]:-}"; unit="${unit%.service}"
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
start() {
  case "$unit" in
    nginx) running /run/nginx.pid || nginx ;;
    php*-fpm) v=${unit#php}; running "/run/php/$unit.pid" || "php-fpm${v%-fpm}" ;;
    mariadb)
      if ! [ -S /run/mysqld/mysqld.sock ]; then
        setsid mariadbd --user=mysql --skip-networking >>"$W/mariadb.log" 2>&1 < /dev/null &
        for _ in $(seq 100); do [ -S /run/mysqld/mysqld.sock ] && break; sleep 0.1; done
      fi ;;
  esac
}
stop() {
  local pid=""
  case "$unit" in
    nginx) pid=/run/nginx.pid ;; php*-fpm) pid="/run/php/$unit.pid" ;;
  esac
  if [ -n "$pid" ] && running "$pid"; then
    p=$(cat "$pid"); kill -QUIT "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
}
reload() {
  case "$unit" in
    nginx) nginx -s reload ;;
    php*-fpm) kill -USR2 "$(cat "/run/php/$unit.pid")" ;;
    ssh) kill -HUP "$(cat /run/sshd.pid)" ;;
  esac
}
case "$verb" in
  start) start ;;
  restart) stop; start ;;
  reload) reload ;;
  reload-or-restart|try-reload-or-restart)
    case "$unit" in
      nginx) if running /run/nginx.pid; then reload; else start; fi ;;
      *) reload ;;
    esac ;;
  is-enabled|is-active) exit 1 ;;
  *) ;;  # enable, daemon-reload...: nothing to do without systemd
esac
"""


@dataclass
class BareServer:
    dir: Path
    ssh_port: int  # on this machine's 127.0.0.1, relayed to the server's port 22
    http_port: int  # relayed to the server's port 80
    https_port: int  # relayed to the server's port 443
    init: subprocess.Popen[bytes] | None = None
    relays: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def known_hosts(self) -> str:
        key = self.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.ssh_port} {' '.join(key)}\n"

    def path(self, server_path: str) -> Path:
        """Where a file the server wrote under an overlaid directory is kept."""
        for d in OVERLAYS:
            if server_path.startswith(f"/{d}/"):
                return self.dir / "upper" / d.replace("/", "_") / server_path[len(d) + 2:]
        if server_path.startswith("/srv/"):
            return self.dir / "srv" / server_path[5:]
        raise ValueError(server_path)

    def reach(self, port: int) -> None:
        """Let the server reach this machine's 127.0.0.1:``port`` at its own 127.0.0.1:``port``
        (an outside service, like an ACME CA)."""
        assert self.init is not None
        sock = self.dir / f"out-{port}.sock"
        self.relays.append(spawn(["socat", f"UNIX-LISTEN:{sock},fork,mode=0600",
                                  f"TCP:127.0.0.1:{port}"], self.dir / f"out-{port}.log"))
        wait_until(sock.exists, what=f"relay to port {port}", timeout=10)
        inside = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children").read_text().split()
        self.relays.append(spawn(
            ["nsenter", "-t", inside[0], "-n", "socat",
             f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"],
            self.dir / f"in-{port}.log"))

    def log(self, name: str) -> str:
        path = self.dir / name
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        for relay in self.relays:
            terminate(relay)
        if self.init is not None:
            terminate(self.init)  # PID 1 of the namespace: the kernel ends the rest
        # Overlay upper layers hold root-owned files; the mounts died with the namespace.
        shutil.rmtree(self.dir, ignore_errors=True)


def start_bare_server(admin_public_key: str, packages: list[str], *,
                      http_port: int | None = None, admin_user: str = "root") -> BareServer:
    for binary in ("unshare", "socat", "sshd", "nginx", "mariadbd", "mariadb-install-db",
                   "visudo"):
        require_binary(binary, "the packages in scripts/setup")
    workdir = lab_root()
    workdir.chmod(0o755)
    files = {
        "init.sh": _INIT.replace("@OVERLAYS@", " ".join(OVERLAYS))
        .replace("@PACKAGES@", " ".join(packages)).replace("@ADMIN@", admin_user),
        "dpkg_state.py": _DPKG_STATE,
        "apt-get": _APT,
        "systemctl": _SYSTEMCTL,
        "admin.pub": admin_public_key.strip() + "\n",
    }
    for name, text in files.items():
        (workdir / name).write_text(text.replace("@W@", str(workdir)))
    server = BareServer(dir=workdir, ssh_port=free_port(), http_port=http_port or free_port(),
                        https_port=free_port())
    log = workdir / "init.log"
    server.init = spawn(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
                         "bash", str(workdir / "init.sh")], log)
    try:
        wait_until(lambda: (workdir / "ready").exists(), what="the bare lab server", timeout=60,
                   log=[log, workdir / "sshd.log"], proc=server.init)
        for port, sock in ((server.ssh_port, "ssh.sock"), (server.http_port, "http.sock"),
                           (server.https_port, "https.sock")):
            server.relays.append(spawn(
                ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                 f"UNIX-CONNECT:{workdir / sock}"], workdir / f"relay-{port}.log"))
        import socket

        def banner() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", server.ssh_port), timeout=2) as s:
                    s.settimeout(3)
                    return s.recv(8).startswith(b"SSH-")
            except OSError:
                return False

        wait_until(banner, what="sshd through the relay", timeout=30,
                   log=[log, workdir / "sshd.log"])
    except BaseException:
        server.stop()
        raise
    return server
