"""SSH targets through paramiko, with host keys taken only from FORGE_KNOWN_HOSTS.

There is no trust on first use: a host whose key is not pinned, or whose key
changed, is refused before any command runs. paramiko's exceptions are
translated here into :mod:`forge_ci.errors`.

FORGE_KNOWN_HOSTS is read here, not by paramiko (whose table keeps one key per
host and type, and which stops at marker lines): any number of keys may be
pinned for a host, of one type or several (a key-rotation window: either is
accepted); ``@revoked`` refuses a key for the hosts it names even when a plain
line pins it too; ``@cert-authority`` is refused with an error, since forge
pins host keys and never trusts a CA. Host patterns are as in OpenSSH: plain,
``[host]:port``, hashed (``|1|salt|hash``), ``*`` and ``?`` wildcards, ``!`` to
exclude.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from forge_ci.errors import ConnectError, HostKeyError, RemoteCommandError, SecretError
from forge_ci.remote.base import CHUNK_SIZE, Host, Process, Result
from forge_ci.remote.dial import Dial, connect


def _import_paramiko_without_invoke() -> None:
    """paramiko imports ``invoke`` (about half its import time) only to run ``Match
    exec`` lines of an ssh_config file, which forge never reads. Hidden while paramiko
    loads (it then records invoke as missing), and visible again right after."""
    hide = "invoke" not in sys.modules
    if hide:
        sys.modules["invoke"] = None  # type: ignore[assignment]
    try:
        import paramiko  # noqa: F401
    finally:
        if hide:
            del sys.modules["invoke"]


_import_paramiko_without_invoke()

import paramiko  # noqa: E402
from paramiko.pkey import UnknownKeyType  # noqa: E402

# paramiko's transport thread logs what it raises, traceback included; with no handler
# Python prints that on stderr. Every such failure reaches us as an exception, which
# _connect translates into one clear error, so its log stays silent.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Bigger windows than paramiko's defaults: release tarballs stream at disk speed.
_WINDOW = 64 * 1024 * 1024
_PACKET = 32768
# AES-GCM before paramiko's first choice (AES-CTR with a separate HMAC-SHA2): one
# AEAD pass per packet, which a release's stream feels on both ends (forge's CPU:
# about a quarter less for 75 MB on loopback). OpenSSH offers it by default; every
# other cipher paramiko accepts stays behind it for servers that do not.
_AEAD_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Transport(paramiko.Transport):
    """paramiko's Transport, whose key exchange may :meth:`begin` early: the
    ``start_client`` that ``SSHClient.connect`` calls then waits for that exchange
    instead of starting one (the host key is checked, and the user authenticated,
    after it, exactly as for a transport that starts there)."""

    _began: threading.Event | None = None

    def begin(self) -> None:
        """Start the key exchange in paramiko's thread and return at once."""
        self._began = threading.Event()
        super().start_client(event=self._began)

    def start_client(self, event: threading.Event | None = None,
                     timeout: float | None = None) -> None:
        if self._began is None or event is not None:
            super().start_client(event=event, timeout=timeout)
            return
        # What paramiko's own synchronous wait does, on the exchange begun earlier.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._began.wait(0.1):
            if not self.is_active():
                break
            if deadline is not None and time.monotonic() >= deadline:
                return
        if not self.is_active():
            raise self.get_exception() or paramiko.SSHException("Negotiation failed.")


def _transport(sock: Any, /, *, gss_kex: bool = False, gss_deleg_creds: bool = False,
               disabled_algorithms: Mapping[str, Iterable[str]] | None = None,
               ) -> _Transport:
    """paramiko's Transport with :data:`_AEAD_FIRST` leading the cipher preference
    (forge never uses GSS-API: ``gss_*`` are paramiko's defaults, left unused)."""
    transport = _Transport(sock, disabled_algorithms=disabled_algorithms)
    options = transport.get_security_options()
    ciphers = tuple(options.ciphers)
    options.ciphers = (tuple(c for c in _AEAD_FIRST if c in ciphers)
                       + tuple(c for c in ciphers if c not in _AEAD_FIRST))
    return transport


def _usable(begun: object) -> bool:
    """An early transport still worth waiting on: alive, or failed in its exchange
    (whose error is then this connection's, as if it had just been made)."""
    if not isinstance(begun, _Transport):
        return False
    return begun.is_active() or not begun.initial_kex_done


def begin_handshake(sock: socket.socket, disabled_algorithms: dict[str, list[str]],
                    timeout: float) -> _Transport:
    """The SSH key exchange on ``sock``, begun now and finished in paramiko's thread
    (a :class:`~forge_ci.remote.dial.Dial`'s start function). It proves nothing and
    trusts nothing yet: :class:`SshHost` checks the host key against the pins and
    authenticates once it takes the transport, as after a connect of its own."""
    transport = _transport(sock, disabled_algorithms=disabled_algorithms)
    transport.banner_timeout = timeout
    transport.begin()
    return transport


def parse_private_key(text: str) -> paramiko.PKey:
    """The private key from FORGE_SSH_KEY (OpenSSH or PEM; ed25519, ECDSA or RSA)."""
    text = text.strip().replace("\r\n", "\n") + "\n"
    if "PRIVATE KEY" not in text:
        raise SecretError("FORGE_SSH_KEY does not hold a private key",
                          hint="paste the whole key file, BEGIN and END lines included")
    classes: list[type[paramiko.PKey]] = [paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey]
    for cls in classes:
        try:
            return cls.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise SecretError("FORGE_SSH_KEY is protected by a passphrase",
                              hint="use a dedicated deploy key without a passphrase, "
                                   "stored as a repository or environment secret") from None
        except (paramiko.SSHException, ValueError):
            continue
    raise SecretError("FORGE_SSH_KEY could not be read as an ed25519, ECDSA or RSA key",
                      hint="generate one with: ssh-keygen -t ed25519 -N '' -f deploy_key")


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_host_name(host: str, port: int) -> str:
    """How known_hosts names ``host:port`` (``[host]:port`` unless port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


# -- FORGE_KNOWN_HOSTS -------------------------------------------------------

# Host-key algorithms a pinned key type may be presented with.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}
_HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                        "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa",
                        *getattr(paramiko.Transport, "_preferred_keys", ()))
_KNOWN_HOSTS_HINT = "use lines as in ~/.ssh/known_hosts ([host]:port keytype base64)"


@dataclass(frozen=True)
class PinnedKey:
    """One usable line of FORGE_KNOWN_HOSTS."""

    patterns: tuple[str, ...]
    key: paramiko.PKey
    revoked: bool
    line: int

    def matches(self, host_id: str) -> bool:
        host_id = host_id.lower()
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern[1:] if negated else pattern, host_id):
                if negated:
                    return False
                hit = True
        return hit


def _pattern_matches(pattern: str, host_id: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(p) for p in pattern[3:].split("|", 1))
        except (ValueError, binascii.Error):
            return False
        mac = hmac.new(salt, host_id.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, digest)
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, host_id) is not None


def _same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


@dataclass(frozen=True)
class KnownHosts:
    """The pinned and revoked host keys, read once from FORGE_KNOWN_HOSTS."""

    entries: tuple[PinnedKey, ...]

    @classmethod
    def parse(cls, text: str) -> KnownHosts:
        entries = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            marker = fields.pop(0) if fields[0].startswith("@") else ""
            if marker == "@cert-authority":
                raise SecretError(
                    f"FORGE_KNOWN_HOSTS line {n}: @cert-authority is not supported: forge "
                    "pins each host's own keys and does not trust a certificate authority",
                    hint="list the host keys themselves (ssh-keyscan, checked out of band); "
                         "@revoked lines may stay")
            if marker not in ("", "@revoked"):
                raise SecretError(f"FORGE_KNOWN_HOSTS line {n}: unknown marker {marker}",
                                  hint=_KNOWN_HOSTS_HINT)
            if len(fields) < 3:
                raise SecretError(f"FORGE_KNOWN_HOSTS line {n} is not 'hosts keytype key'",
                                  hint=_KNOWN_HOSTS_HINT)
            patterns, key_type, data = fields[:3]
            try:
                key = paramiko.PKey.from_type_string(key_type, base64.b64decode(data,
                                                                                validate=True))
            except UnknownKeyType:
                continue  # a type paramiko cannot use (e.g. a security key): never offered
            except (ValueError, binascii.Error, paramiko.SSHException):
                raise SecretError(f"FORGE_KNOWN_HOSTS line {n}: the {key_type} key does not "
                                  "decode", hint=_KNOWN_HOSTS_HINT) from None
            entries.append(PinnedKey(tuple(patterns.split(",")), key, marker == "@revoked", n))
        return cls(tuple(entries))

    def pinned(self, host_id: str) -> list[paramiko.PKey]:
        """Keys accepted for ``host_id``: pinned by a plain line, revoked by none."""
        keys = [e.key for e in self.entries if not e.revoked and e.matches(host_id)]
        return [k for k in keys if not self.revoked(host_id, k)]

    def revoked(self, host_id: str, key: paramiko.PKey) -> bool:
        return any(e.revoked and e.matches(host_id) and _same_key(e.key, key)
                   for e in self.entries)

    def disabled_algorithms(self, host_id: str) -> dict[str, list[str]]:
        """Host-key algorithms to turn off so the server presents a pinned type."""
        wanted = {a for k in self.pinned(host_id)
                  for a in _ALGORITHMS.get(k.get_name(), (k.get_name(),))}
        return {"keys": sorted({a for a in _HOST_KEY_ALGORITHMS if a not in wanted})}


class _CheckPinned(paramiko.MissingHostKeyPolicy):
    """Accept exactly the keys FORGE_KNOWN_HOSTS pins for the host, never a revoked one."""

    def __init__(self, known: KnownHosts, host_id: str) -> None:
        self._known, self._host_id = known, host_id

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if self._known.revoked(self._host_id, key):
            raise HostKeyError(
                f"the host key of {self._host_id} ({fingerprint(key)}) is REVOKED in "
                "FORGE_KNOWN_HOSTS; refusing to connect",
                hint="the server still presents a key you revoked: replace the server's "
                     "host key, or remove the @revoked line if that was a mistake")
        pinned = self._known.pinned(self._host_id)
        if not any(_same_key(key, k) for k in pinned):
            raise HostKeyError(
                f"the host key of {self._host_id} has CHANGED: it presents "
                f"{fingerprint(key)}, FORGE_KNOWN_HOSTS pins "
                + ", ".join(fingerprint(k) for k in pinned),
                hint="if the server was rebuilt, update the known-hosts secret (provision "
                     "prints it); otherwise someone may be intercepting: do not proceed")


@contextlib.contextmanager
def _lost(name: str) -> Iterator[None]:
    """paramiko's ways of saying the connection went away, as one ConnectError."""
    try:
        yield
    except (EOFError, paramiko.SSHException, ConnectionError, BrokenPipeError) as e:
        raise ConnectError(f"lost the SSH connection to {name}"
                           + (f": {e}" if str(e) else ""),
                           hint="check the server and network, then run again") from None


class SshProcess(Process):
    def __init__(self, channel: paramiko.Channel, name: str) -> None:
        self._ch = channel
        self._err = bytearray()
        self._name = name

    def write(self, data: bytes) -> None:
        with _lost(self._name):
            if self._ch.closed:
                raise EOFError("channel closed")
            self._ch.sendall(data)

    def close_stdin(self) -> None:
        with _lost(self._name):
            if not self._ch.closed:
                self._ch.shutdown_write()

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        with _lost(self._name):
            return self._ch.recv(size)

    def wait(self, timeout: float | None = None) -> int:
        self.close_stdin()
        deadline = None if timeout is None else time.monotonic() + timeout
        # status_event may wait forever on a dying connection, so look at the transport too.
        while not self._ch.status_event.wait(0.5):
            if self._ch.closed:
                raise ConnectError(f"lost the SSH connection to {self._name}")
            self._check_connected()
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise RemoteCommandError(f"a command on {self._name} did not finish in time")
        self._drain_stderr()
        status = self._ch.recv_exit_status()
        if status == -1:
            # No exit status: paramiko also sets status_event when the connection
            # dies. That is a lost connection, not a command that failed.
            self._check_connected()
        return status

    def _check_connected(self) -> None:
        transport = self._ch.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"lost the SSH connection to {self._name}")

    def _drain_stderr(self) -> None:
        while self._ch.recv_stderr_ready():
            self._err += self._ch.recv_stderr(CHUNK_SIZE)

    def stderr(self) -> bytes:
        self._drain_stderr()
        return bytes(self._err)

    def kill(self) -> None:
        # Called while cleaning up after a failure, often one that lost the connection:
        # closing a channel whose transport is gone has nothing left to stop.
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self._ch.close()


class SshHost(Host):
    """One SSH target. Connects in the constructor so reachability is checked first."""

    compress_streams = True  # every byte is encrypted, sent, decrypted

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        *,
        key: paramiko.PKey,
        known_hosts: str | KnownHosts,
        timeout: float = 15.0,
        early: Dial | None = None,
    ) -> None:
        """``early``: a dial to this host begun before forge.yml was validated
        (:func:`forge_ci.targets.preconnect`); used when its key exchange offered
        exactly what this connection would, else closed. Either way the host key is
        checked and the user authenticated here."""
        self.name = f"{user}@{host}:{port}"
        known = known_hosts if isinstance(known_hosts, KnownHosts) else KnownHosts.parse(
            known_hosts)
        host_id = known_host_name(host, port)
        if not known.pinned(host_id):
            raise HostKeyError(
                f"{host_id} is not in FORGE_KNOWN_HOSTS; refusing to trust it"
                + (" (every key pinned for it is revoked)"
                   if any(e.matches(host_id) for e in known.entries) else ""),
                hint=f"pin it: ssh-keyscan -p {port} {host} (checked out of band) "
                     "or the known-hosts output of forge-ci provision")
        self._client = paramiko.SSHClient()
        # Nothing goes into paramiko's own table: every key is checked by _CheckPinned.
        self._client.set_missing_host_key_policy(_CheckPinned(known, host_id))
        algorithms = known.disabled_algorithms(host_id)
        if early is not None and (early.host, early.port, early.timeout, early.tag) != (
                host, port, timeout, algorithms):
            early.close()
            early = None
        try:
            self._connect(host, port, user, key, timeout, algorithms, early)
        except BaseException:
            self._client.close()  # a refused host key leaves paramiko's transport running
            raise
        transport = self._client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        self._transport = transport

    def _connect(self, host: str, port: int, user: str, key: paramiko.PKey,
                 timeout: float, disabled_algorithms: dict[str, list[str]],
                 early: Dial | None) -> None:
        try:
            factory: Callable[..., paramiko.Transport] = _transport
            # An early dial's connect error is this connect's error, unchanged.
            taken = early.take() if early is not None else None
            if taken is not None and not _usable(taken[1]):
                taken[1].close()  # its exchange went through, then the server left
                taken = None
            if taken is not None:
                sock, begun = taken

                def factory(_sock: Any, /, **_: Any) -> paramiko.Transport:
                    assert isinstance(begun, _Transport)
                    return begun
            else:
                sock = connect(host, port, timeout)
            self._client.connect(
                host, port=port, username=user, pkey=key, timeout=timeout, sock=sock,
                banner_timeout=timeout, auth_timeout=timeout,
                allow_agent=False, look_for_keys=False,
                disabled_algorithms=disabled_algorithms, transport_factory=factory,
            )
        except paramiko.BadHostKeyException as e:
            raise HostKeyError(
                f"the host key of {known_host_name(host, port)} has CHANGED: it presents "
                f"{fingerprint(e.key)}, FORGE_KNOWN_HOSTS pins {fingerprint(e.expected_key)}",
                hint="if the server was rebuilt, update the known-hosts secret (provision "
                     "prints it); otherwise someone may be intercepting: do not proceed",
            ) from None
        except paramiko.AuthenticationException:
            raise ConnectError(
                f"{self.name} refused the key in FORGE_SSH_KEY",
                hint=f"add its public key to ~{user}/.ssh/authorized_keys on the server",
            ) from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise HostKeyError(
                    f"{known_host_name(host, port)} is not in FORGE_KNOWN_HOSTS; "
                    "refusing to trust it",
                    hint=f"pin it: ssh-keyscan -p {port} {host} (checked out of band) "
                         "or the known-hosts output of forge-ci provision",
                ) from None
            if "protocol banner" in str(e):
                raise ConnectError(
                    f"{known_host_name(host, port)} answers but does not speak SSH (no SSH banner: "
                    "a web server or another service on that port?)",
                    hint="check hosts[].port in forge.yml: it must be the server's sshd port",
                ) from None
            raise ConnectError(f"SSH to {self.name} failed: {e}") from None
        except (TimeoutError, OSError) as e:
            reason = e.strerror or e.__class__.__name__
            raise ConnectError(f"cannot reach {self.name}: {reason}",
                               hint="check host, port and firewall") from None

    def _channel(self, script: str) -> paramiko.Channel:
        try:
            ch = self._transport.open_session(window_size=_WINDOW, max_packet_size=_PACKET)
            ch.exec_command(script)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(f"lost the SSH connection to {self.name}: {e}") from None
        return ch

    def run(
        self,
        script: str,
        *,
        input: bytes | None = None,
        timeout: float | None = 600,
        check: bool = True,
    ) -> Result:
        proc = SshProcess(self._channel(script), self.name)
        out = bytearray()
        try:
            if input:
                proc.write(input)
            proc.close_stdin()
            proc._ch.settimeout(timeout)
            while chunk := proc.read(CHUNK_SIZE):
                out += chunk
            status = proc.wait(timeout)
        except TimeoutError:
            proc.kill()
            raise RemoteCommandError(f"a command on {self.name} timed out") from None
        result = Result(status, bytes(out), proc.stderr())
        if check:
            first = script.strip().splitlines()[0][:80] if script.strip() else "command"
            return self.check(result, f"`{first}`")
        return result

    def start(self, script: str) -> Process:
        return SshProcess(self._channel(script), self.name)

    def close(self) -> None:
        self._client.close()


def connector(key_text: str | None, known_hosts: str | None, *, timeout: float = 15.0,
              early: Mapping[tuple[str, int], Dial] | None = None,
              ) -> Callable[[str, int, str], SshHost]:
    """Check the two SSH secrets once and return a function that opens hosts (with
    ``early``'s dial to the same host and port, when there is one)."""
    if not key_text:
        raise SecretError("FORGE_SSH_KEY is not set",
                          hint="pass the deploy key as a secret in the step's env:")
    if not known_hosts:
        raise SecretError("FORGE_KNOWN_HOSTS is not set; forge never trusts a host key "
                          "on first use", hint="pass the pinned host keys as a secret")
    key = parse_private_key(key_text)
    known = KnownHosts.parse(known_hosts)

    def open_host(host: str, port: int, user: str) -> SshHost:
        dial = early.get((host, port)) if early is not None else None
        return SshHost(host, port, user, key=key, known_hosts=known, timeout=timeout,
                       early=dial)

    return open_host


__all__ = ["KnownHosts", "SshHost", "begin_handshake", "connector", "fingerprint",
           "known_host_name", "parse_private_key"]
