"""A TCP proxy on loopback that misbehaves on request.

Put it between code under test and any lab service (S3, sshd, nginx) to
prove retries and error handling against a real network failure:

- `drop_after_bytes`: cut a connection (RST both ways) once that many bytes
  went client -> server; `drop_after_bytes_down` likewise server -> client;
  `drop_connections` limits how many connections get cut (None: all), so
  "fails once, then works" is one setting;
- `delay`: seconds slept before forwarding each chunk, both ways;
- `refuse`: new connections are reset at once (the client sees a reset, not
  a timeout).

Faults apply to connections accepted after `set()`; `kill_connections()`
cuts the open ones. `stats()` counts what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import threading
import time
from dataclasses import dataclass

_CHUNK = 64 * 1024
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class Faults:
    drop_after_bytes: int | None = None
    drop_after_bytes_down: int | None = None
    drop_connections: int | None = None
    delay: float = 0.0
    refuse: bool = False


@dataclass(frozen=True)
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    active: int = 0


class _Link:
    """One proxied connection: two sockets and the limits it got at accept time."""

    def __init__(self, client: socket.socket, upstream: socket.socket, faults: Faults) -> None:
        self.client = client
        self.upstream = upstream
        self.limits = {"up": faults.drop_after_bytes, "down": faults.drop_after_bytes_down}
        self.delay = faults.delay
        self.sent = {"up": 0, "down": 0}
        self.cut = False
        self._lock = threading.Lock()
        self._open_pumps = 2

    def reset(self) -> None:
        with self._lock:
            self.cut = True
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                # close() alone waits for a thread blocked in recv() on the same
                # socket; SHUT_RD wakes it without sending the peer a FIN.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
                with contextlib.suppress(OSError):
                    sock.close()

    def pump_done(self) -> bool:
        """True for the second pump to finish: it closes both sockets."""
        with self._lock:
            self._open_pumps -= 1
            last = self._open_pumps == 0
        if last:
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.close()
        return last


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._faults = Faults()
        self._stats = ProxyStats()
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set(self, **changes: object) -> None:
        """Change faults, e.g. `set(drop_after_bytes=1000, drop_connections=1)`."""
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)  # type: ignore[arg-type]

    def clear(self) -> None:
        with self._lock:
            self._faults = Faults()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def stats(self) -> ProxyStats:
        with self._lock:
            return dataclasses.replace(self._stats, active=len(self._links))

    def kill_connections(self) -> int:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.reset()
        return len(links)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.kill_connections()
        self._thread.join(timeout=5)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            changes = {name: getattr(self._stats, name) + delta for name, delta in deltas.items()}
            self._stats = dataclasses.replace(self._stats, **changes)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            faults = self._take_faults()
            if faults.refuse:
                self._count(refused=1)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                client.close()
                continue
            self._count(accepted=1)
            threading.Thread(target=self._open, args=(client, faults), daemon=True).start()

    def _take_faults(self) -> Faults:
        """The faults for one new connection; uses up one of `drop_connections`."""
        with self._lock:
            faults = self._faults
            dropping = (
                faults.drop_after_bytes is not None or faults.drop_after_bytes_down is not None
            )
            if dropping and faults.drop_connections is not None:
                if faults.drop_connections <= 0:
                    return dataclasses.replace(
                        faults, drop_after_bytes=None, drop_after_bytes_down=None
                    )
                self._faults = dataclasses.replace(
                    faults, drop_connections=faults.drop_connections - 1
                )
            return faults

    def _open(self, client: socket.socket, faults: Faults) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
            client.close()
            return
        upstream.settimeout(None)
        link = _Link(client, upstream, faults)
        with self._lock:
            self._links.add(link)
        for direction, src, dst in (("up", client, upstream), ("down", upstream, client)):
            threading.Thread(
                target=self._pump, args=(link, direction, src, dst), daemon=True
            ).start()

    def _pump(self, link: _Link, direction: str, src: socket.socket, dst: socket.socket) -> None:
        try:
            self._forward(link, direction, src, dst)
        except OSError:
            link.reset()
        finally:
            if link.pump_done():
                with self._lock:
                    self._links.discard(link)

    def _forward(self, link: _Link, direction: str, src: socket.socket, dst: socket.socket) -> None:
        limit = link.limits[direction]
        while not link.cut:
            data = src.recv(_CHUNK)
            if not data:
                # Half-close: pass the end of stream on, keep the other way open.
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if link.delay:
                time.sleep(link.delay)
            if limit is not None and link.sent[direction] + len(data) >= limit:
                self._send(dst, data[: limit - link.sent[direction]], direction, link)
                self._count(dropped=1)
                link.reset()
                return
            self._send(dst, data, direction, link)

    def _send(self, dst: socket.socket, data: bytes, direction: str, link: _Link) -> None:
        # Counted first: once the peer has the bytes, stats() must show them.
        link.sent[direction] += len(data)
        self._count(**{f"bytes_{direction}": len(data)})
        dst.sendall(data)
