"""A real OpenSSH server on a loopback port, one per simulated host.

Each `SshHost` owns a private directory with its own host key, config,
authorized_keys and pid file, so several can run side by side and a test can
change one host's key or cut its connections without touching the others.
All hosts share the local `forgedeploy` account (one machine, many ports):
tests that deploy to several hosts must give each host its own path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import leaks
from ._proc import (
    LabError,
    descendants,
    lab_root,
    on_free_port,
    require_binary,
    require_root,
    spawn,
    terminate,
    wait_until,
)
from .users import DEPLOY_USER, ensure_deploy_user

_START_TIMEOUT = 15.0


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key: private in OpenSSH PEM form, public as an authorized_keys line."""

    private: str
    public: str


def generate_ed25519(comment: str = "forge-lab") -> KeyPair:
    """A fresh key; its private half is registered as a secret (tests/lab/leaks.py)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    leaks.register(private)
    return KeyPair(private=private, public=f"{public} {comment}")


def _write_secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return leaks.holds_secrets(path)


@dataclass
class SshHost:
    """One running sshd. `known_hosts` always matches the current host key."""

    host: str
    port: int
    user: str
    private_key: str
    public_key: str
    known_hosts: str
    host_key_path: Path
    private_key_path: Path
    known_hosts_path: Path
    workdir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    extra_config: tuple[str, ...] = ()  # more sshd_config lines (e.g. a jail's SetEnv)

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        """FORGE_SSH_KEY and FORGE_KNOWN_HOSTS for reaching this host."""
        return {"FORGE_SSH_KEY": self.private_key, "FORGE_KNOWN_HOSTS": self.known_hosts + "\n"}

    def ssh_argv(self, *remote: str) -> list[str]:
        """An `ssh` command line that trusts exactly this host's current key."""
        return [
            "ssh",
            "-i", str(self.private_key_path),
            "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            f"{self.user}@{self.host}",
            *remote,
        ]  # fmt: skip

    def start(self) -> None:
        """(Re)start the daemon on the same port with the current host key."""
        if self.running:
            return
        _ensure_privsep_dir()
        config = _write_config(self)
        self._proc = spawn([require_binary("sshd"), "-D", "-e", "-f", str(config)], self.log_path)
        wait_until(
            lambda: _banner(self.port),
            what=f"sshd on port {self.port}",
            timeout=_START_TIMEOUT,
            log=self.log_path,
            proc=self._proc,
        )

    def stop(self) -> None:
        """Stop the listener and cut every open session (the host 'goes away')."""
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def close(self) -> None:
        """Stop and delete the host's directory (keys included). What sshd logged as
        an error is printed before its log goes: pytest shows it beside a failed test,
        and a request sshd refused (a failed fork, too many sessions) says why only
        there - the client sees "Channel closed."."""
        self.stop()
        for line in _complaints(self.log_path):
            print(f"sshd on port {self.port}: {line}")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill_connections(self) -> int:
        """Kill every open SSH session but keep listening; returns how many processes died."""
        if self._proc is None:
            return 0
        victims = descendants(self._proc.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)

    def restart(self, *, new_host_key: bool = False) -> None:
        """Restart on the same port; with `new_host_key`, as a reinstalled server would."""
        self.stop()
        if new_host_key:
            _write_host_key(self)
        self.start()

    def rotate_host_key(self) -> str:
        """Restart with a fresh host key; returns the old known_hosts line."""
        old = self.known_hosts
        self.restart(new_host_key=True)
        return old


def known_hosts(hosts: list[SshHost]) -> str:
    """One FORGE_KNOWN_HOSTS text pinning every host in `hosts`."""
    return "".join(host.known_hosts + "\n" for host in hosts)


def start_sshd(client_key: KeyPair | None = None, user: str = DEPLOY_USER,
               extra_config: tuple[str, ...] = ()) -> SshHost:
    """Start an sshd for `user` accepting `client_key` (a fresh one if None)."""
    require_root()
    ensure_deploy_user(user)
    key = client_key or generate_ed25519()
    workdir = lab_root()
    (workdir / "authorized_keys").write_text(key.public + "\n")
    (workdir / "authorized_keys").chmod(0o644)
    host = SshHost(
        host="127.0.0.1",
        port=0,
        user=user,
        private_key=key.private,
        public_key=key.public,
        known_hosts="",
        host_key_path=workdir / "ssh_host_ed25519_key",
        private_key_path=_write_secret(workdir / "id_ed25519", key.private),
        known_hosts_path=workdir / "known_hosts",
        workdir=workdir,
        extra_config=extra_config,
    )
    return on_free_port(lambda port: _first_start(host, port))


def _first_start(host: SshHost, port: int) -> SshHost:
    host.port = port
    _write_host_key(host)
    try:
        host.start()
    except LabError:
        host.stop()
        raise
    return host


def _write_host_key(host: SshHost) -> None:
    pair = generate_ed25519(comment="lab-host")
    _write_secret(host.host_key_path, pair.private)
    key_type, blob = pair.public.split()[:2]
    host.known_hosts = f"[{host.host}]:{host.port} {key_type} {blob}"
    host.known_hosts_path.write_text(host.known_hosts + "\n")


def _complaints(log: Path) -> list[str]:
    """The lines of an sshd log that tell of a failure: errors and fatal ones (``-e``
    puts the level in front; a failed fork or pipe, "no more sessions") and requests
    it turned down (a subsystem's say "failed"; a request on a channel it has no
    session for, "no session")."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines()
            if line.startswith(("error:", "fatal:")) or " failed" in line
            or "no session" in line]


def _ensure_privsep_dir() -> None:
    # Created by the ssh service at boot; absent when the package was
    # installed with services held back (CI), and sshd refuses to start without it.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _write_config(host: SshHost) -> Path:
    lines = [
        f"Port {host.port}",
        f"ListenAddress {host.host}",
        f"HostKey {host.host_key_path}",
        f"PidFile {host.workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {host.workdir / 'authorized_keys'}",
        f"AllowUsers {host.user}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "UsePAM no",
        # The key file sits under /tmp (world-writable), which StrictModes rejects.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        # Tests open many connections at once (parallel hosts, retries).
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "LoginGraceTime 30",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if _openssh_version() >= (9, 8):
        # Newer sshd bans sources that fail or drop connections; tests do both on purpose.
        lines.append("PerSourcePenalties no")
    lines += host.extra_config
    config = host.workdir / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _openssh_version() -> tuple[int, int]:
    done = subprocess.run(
        [require_binary("sshd"), "-V"], capture_output=True, text=True, check=False, timeout=10
    )
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False
