"""Where an environment's releases go: its hosts and its path, from forge.yml.

The remote seam knows nothing of forge.yml; this is where config meets it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from forge_ci.remote import Host, LocalHost
from forge_ci.remote.dial import Dial

if TYPE_CHECKING:
    from forge_ci.config import EnvironmentConfig

# How long a connection may take to be made, and to say it speaks SSH.
CONNECT_TIMEOUT = 15.0


def target_root(config: EnvironmentConfig, config_dir: Path) -> str:
    """The environment's ``path``: absolute on servers, relative to forge.yml locally."""
    if config.is_local:
        return str((config_dir / config.path).resolve())
    return config.path.rstrip("/") or "/"


class Preconnected:
    """Connections to an environment's hosts begun before forge.yml is validated
    (:func:`preconnect`): a TCP connection and the SSH key exchange, nothing more.
    :func:`open_hosts` takes those it would make anyway; :meth:`close` drops the rest."""

    def __init__(self, dials: Mapping[tuple[str, int], Dial] | None = None) -> None:
        self.dials = dict(dials or {})

    def close(self) -> None:
        for dial in self.dials.values():
            dial.close()


def peek_hosts(path: Path, environment: str) -> list[tuple[str, int]]:
    """The ``host`` and ``port`` of each of ``environment``'s hosts as forge.yml
    literally gives them, read without validating anything: only a guess at where
    the run will connect (nothing is trusted or sent on its strength). Empty when
    the file cannot be read, is not shaped as expected, or uses ``${VAR}`` there."""
    import yaml

    try:
        # libyaml's safe loader when there (a plain scan; the validating one keeps lines).
        safe = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(path.read_bytes(), Loader=safe)  # noqa: S506 - a safe loader
    except (OSError, ValueError, yaml.YAMLError):
        return []
    env = data.get("environments") if isinstance(data, dict) else None
    env = env.get(environment) if isinstance(env, dict) else None
    hosts = env.get("hosts") if isinstance(env, dict) else None
    if not isinstance(hosts, list):
        return []
    out = []
    for h in hosts:
        if not isinstance(h, dict):
            return []
        host, port = h.get("host"), h.get("port", 22)
        if not isinstance(host, str) or "$" in host or not host or type(port) is not int:
            return []
        out.append((host, port))
    return out


def preconnect(path: Path, environment: str, environ: Mapping[str, str]) -> Preconnected:
    """Begin connecting to ``environment``'s hosts while forge.yml is still to be
    validated: the server's start-up (fork, banner, key exchange) then overlaps ours.
    No secret is used: the key exchange offers the host-key types FORGE_KNOWN_HOSTS
    pins (public keys); the host key is checked, and the user authenticated, only
    by :func:`open_hosts` after validation, which takes a connection only if it is
    the one it would make (same host, port and offer) and makes its own otherwise."""
    if not environ.get("FORGE_SSH_KEY") or not environ.get("FORGE_KNOWN_HOSTS"):
        return Preconnected()  # it could not connect anyway
    targets = peek_hosts(path, environment)[:8]
    if not targets:
        return Preconnected()
    if not all(host.isascii() for host, _ in targets):
        import encodings.idna  # noqa: F401 - the resolver's codec: here, not in a thread
    dials = {t: Dial(*t, CONNECT_TIMEOUT) for t in dict.fromkeys(targets)}
    early = Preconnected(dials)
    try:
        # paramiko loads while the TCP connections are made and sshd starts up.
        from forge_ci.errors import ForgeError
        from forge_ci.remote import ssh

        try:
            known = ssh.KnownHosts.parse(environ["FORGE_KNOWN_HOSTS"])
        except ForgeError:
            early.close()  # open_hosts reports it
            return Preconnected()
        for (host, port), dial in dials.items():
            name = ssh.known_host_name(host, port)
            if not known.pinned(name):
                continue  # refused before any connection: left to open_hosts
            algorithms = known.disabled_algorithms(name)
            dial.then(functools.partial(ssh.begin_handshake, disabled_algorithms=algorithms,
                                        timeout=CONNECT_TIMEOUT), tag=algorithms)
    except BaseException:
        early.close()
        raise
    return early


def open_hosts(config: EnvironmentConfig, secrets: Mapping[str, str],
               early: Preconnected | None = None) -> list[Host]:
    """Connect to every host of the environment (or the local one); fail before
    changing anything. ``early``'s connections are used where they fit, and all of
    them are closed or taken when this returns."""
    try:
        if config.is_local:
            return [LocalHost()]
        from forge_ci.remote.ssh import connector

        open_host = connector(secrets.get("FORGE_SSH_KEY"), secrets.get("FORGE_KNOWN_HOSTS"),
                              timeout=CONNECT_TIMEOUT, early=early.dials if early else None)
        hosts: list[Host] = []
        try:
            for h in config.hosts:
                hosts.append(open_host(h.host, h.port, h.user))
        except BaseException:
            for opened in hosts:
                opened.close()
            raise
        return hosts
    finally:
        if early is not None:
            early.close()


class Opening:
    """:func:`open_hosts` in a thread of its own, so the servers' work after
    authentication (about 50 ms of sshd's before the first command) overlaps what
    the caller does meanwhile; :meth:`hosts` waits and returns them, or raises what
    opening them raised."""

    def __init__(self, config: EnvironmentConfig, secrets: Mapping[str, str],
                 early: Preconnected | None = None) -> None:
        self._hosts: list[Host] | None = None
        self._error: BaseException | None = None
        self._claimed = False
        self._lock = threading.Lock()
        self._abandoned = False
        if not config.is_local:
            import forge_ci.remote.ssh  # noqa: F401 - imported here: never in a second thread
        self._thread = threading.Thread(target=self._run, args=(config, secrets, early),
                                        name="open hosts", daemon=True)
        self._thread.start()

    def _run(self, config: EnvironmentConfig, secrets: Mapping[str, str],
             early: Preconnected | None) -> None:
        try:
            hosts = open_hosts(config, secrets, early)
        except BaseException as e:
            self._error = e
            return
        with self._lock:
            self._hosts = hosts
            if not self._abandoned:
                return
        for h in hosts:  # the caller failed meanwhile and did not wait
            h.close()

    def hosts(self) -> list[Host]:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self._hosts is not None
        self._claimed = True
        return self._hosts

    def close(self) -> None:
        """Close what was opened and not claimed (the caller failed meanwhile),
        without waiting for a connection still being made: that one is closed
        when it is."""
        if self._claimed:
            return
        with self._lock:
            self._abandoned = True
            hosts, self._hosts = self._hosts, None
        for h in hosts or ():
            h.close()


@contextlib.contextmanager
def opening(config: EnvironmentConfig, secrets: Mapping[str, str],
            early: Preconnected | None = None) -> Iterator[Opening]:
    """:class:`Opening` whose hosts are closed if the block fails before taking them."""
    pending = Opening(config, secrets, early)
    try:
        yield pending
    finally:
        pending.close()
