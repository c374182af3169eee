"""Boot a fake Hetzner server for real: an sshd on the server's 127.x address.

When the fake API creates a server, :class:`Booter` reads that server's user
data the way cloud-init would — the ``ssh_keys`` host key and the deploy user's
``ssh_authorized_keys`` — and starts an OpenSSH server with them on the
address the API handed out. The sshd runs *as the deploy user* (lab account
``forgedeploy``), so the rotation script can replace the host key and send the
daemon SIGHUP without root, exactly like ``systemctl reload ssh`` on Ubuntu.

PATH for SSH sessions starts with a bin directory holding:

- ``cloud-init``: answers ``status --wait`` with the exit code in ``cloud_init_exit``;
- ``sudo``: runs its arguments (``-n`` dropped) as the deploy user;
- ``forge-rotate-host-keys``: forge's own rotation script
  (:func:`forge_ci.provision.stack.rotate_script`) with lab paths.

tests/lab/sshd.py cannot serve here: it binds 127.0.0.1 with a random host key
and runs sshd as root.
"""

from __future__ import annotations

import os
import pwd
import queue
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import yaml
from lab._proc import lab_root, require_binary, spawn, terminate, wait_until
from lab.hetzner import HetznerFake
from lab.users import DEPLOY_USER, ensure_deploy_user

from forge_ci.provision.stack import rotate_script


@dataclass
class LabServer:
    name: str
    address: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key_path(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def marker(self) -> Path:
        return self.workdir / "first-boot-host-key"

    def public_key_on_disk(self) -> str:
        return " ".join((self.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    def set_cloud_init_exit(self, code: int) -> None:
        (self.workdir / "cloud_init_exit").write_text(f"{code}\n")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def presented_key(address: str, port: int) -> str:
    """The host key the server at ``address:port`` presents, as ``type base64``."""
    with socket.create_connection((address, port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            transport.close()


class Booter:
    """``fake.on_create`` hook: boots every created server on ``port``."""

    def __init__(self, fake: HetznerFake, port: int, *, cloud_init_exit: int = 0) -> None:
        self.fake, self.port, self.cloud_init_exit = fake, port, cloud_init_exit
        self.servers: dict[str, LabServer] = {}
        self.errors: list[BaseException] = []
        # sshd dies with the *thread* that started it (PR_SET_PDEATHSIG), and the API's
        # handler threads end with their connection: start servers from one that lasts.
        self._jobs: queue.Queue[tuple[dict[str, Any], threading.Event] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        fake.on_create = self

    def __call__(self, server: dict[str, Any]) -> None:
        done = threading.Event()
        self._jobs.put((server, done))
        done.wait(30)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            server, done = job
            try:
                self.boot(server["name"], server["public_net"]["ipv4"]["ip"])
            except BaseException as e:  # the API must answer anyway; tests check errors
                self.errors.append(e)
            finally:
                done.set()

    def boot(self, name: str, address: str) -> LabServer:
        cfg = yaml.safe_load(self.fake.user_data[name])
        user = cfg["users"][0]
        assert user["name"] == DEPLOY_USER, "the lab logs in as forgedeploy: set deploy_user"
        ensure_deploy_user(DEPLOY_USER)
        workdir = lab_root()
        lab = LabServer(name=name, address=address, port=self.port, workdir=workdir)
        _write(lab.host_key_path, cfg["ssh_keys"]["ed25519_private"], 0o600)
        _write(workdir / "ssh_host_ed25519_key.pub", cfg["ssh_keys"]["ed25519_public"] + "\n")
        _write(workdir / "authorized_keys", "\n".join(user["ssh_authorized_keys"]) + "\n")
        _write(lab.marker, "first boot\n", 0o600)
        lab.set_cloud_init_exit(self.cloud_init_exit)
        _write_bin(lab)
        config = _write_config(lab)
        _chown_tree(workdir)
        log = workdir / "sshd.log"
        lab.proc = spawn([require_binary("sshd"), "-D", "-e", "-f", str(config)], log,
                         user=DEPLOY_USER)
        wait_until(lambda: _banner(address, self.port), what=f"sshd on {address}:{self.port}",
                   timeout=15, log=log, proc=lab.proc)
        self.servers[name] = lab
        return lab

    def stop(self) -> None:
        for lab in self.servers.values():
            lab.stop()
        self._jobs.put(None)
        self._worker.join(10)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _write_bin(lab: LabServer) -> None:
    bin_dir = lab.workdir / "bin"
    bin_dir.mkdir()
    scripts = {
        "cloud-init": (
            "#!/bin/sh\n"
            'if [ "$1" = status ]; then\n'
            f'    code=$(cat {lab.workdir}/cloud_init_exit)\n'
            '    [ "$code" = 0 ] && echo "status: done" || echo "status: error"\n'
            '    exit "$code"\n'
            "fi\n"
            "exit 0\n"
        ),
        "sudo": '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n',
        "forge-rotate-host-keys": rotate_script(
            key=str(lab.host_key_path), marker=str(lab.marker),
            reload=f'kill -HUP "$(cat {lab.workdir}/sshd.pid)"'),
    }
    for name, text in scripts.items():
        _write(bin_dir / name, text, 0o755)


def _write_config(lab: LabServer) -> Path:
    lines = [
        f"Port {lab.port}",
        f"ListenAddress {lab.address}",
        f"HostKey {lab.host_key_path}",
        f"PidFile {lab.workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {lab.workdir / 'authorized_keys'}",
        f"AllowUsers {DEPLOY_USER}",
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the files sit under /tmp
        "UseDNS no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        f"SetEnv PATH={lab.workdir / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    ]
    if _openssh_version() >= (9, 8):
        lines.append("PerSourcePenalties no")
    path = lab.workdir / "sshd_config"
    _write(path, "\n".join(lines) + "\n")
    return path


def _chown_tree(root: Path) -> None:
    entry = pwd.getpwnam(DEPLOY_USER)
    for dirpath, dirs, files in os.walk(root):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for item in (*dirs, *files):
            os.chown(os.path.join(dirpath, item), entry.pw_uid, entry.pw_gid)


def _openssh_version() -> tuple[int, int]:
    done = subprocess.run([require_binary("sshd"), "-V"], capture_output=True, text=True,
                          check=False, timeout=10)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False
