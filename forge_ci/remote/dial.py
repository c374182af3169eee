"""TCP connections opened ahead of time, so the far side's start-up overlaps ours.

A run that will connect to a host spends its first ~0.2 s importing and validating
forge.yml, while sshd on the other side has its own start-up to do (fork and
re-exec, its banner, the key exchange). :class:`Dial` opens the TCP connection in a
thread as soon as the target is known and runs a start function (the SSH key
exchange, :func:`forge_ci.remote.ssh.begin_handshake`) once both the connection and
that function are there. Nothing here reads a secret or trusts anything: whoever
takes the connection checks the server as if it had just connected, and a dial that
is not taken is closed.

No module imports happen in the thread (the caller imports what the start function
needs first): imports racing across threads can deadlock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with ``TCP_NODELAY`` (without it, Nagle and delayed ACKs add
    ~40 ms to every command's round trip). An ASCII name is resolved as bytes: as a
    str, Python's resolver loads its IDNA codec first (~10 ms of a run), and a name
    the codec refuses (a label over 63 characters) fails as a resolver error then."""
    address = host.encode() if host.isascii() else host
    # typeshed says str; the resolver takes bytes too (it encodes a str to them).
    sock = socket.create_connection((address, port), timeout=timeout)  # type: ignore[arg-type]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Closable(Protocol):
    def close(self) -> None: ...


class Dial:
    """A TCP connection to ``host:port`` being opened in a thread (``TCP_NODELAY``),
    then handed to ``start`` (set with :meth:`then`) from whichever thread has both."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.tag: Any = None  # what the start function was made for (its caller's check)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        self._error: OSError | None = None
        self._start: Callable[[socket.socket], Closable] | None = None
        self._started: Closable | None = None
        self._closed = False
        threading.Thread(target=self._connect, name=f"dial {host}:{port}", daemon=True).start()

    def _connect(self) -> None:
        try:
            sock = connect(self.host, self.port, self.timeout)
        except OSError as e:
            self._error = e
        else:
            with self._lock:
                self._sock = sock
                if self._closed:
                    sock.close()
            self._run_start()
        finally:
            self._connected.set()

    def then(self, start: Callable[[socket.socket], Closable], tag: Any = None) -> None:
        """Run ``start(sock)`` once connected (now, if already)."""
        with self._lock:
            self._start, self.tag = start, tag
        self._run_start()

    def _run_start(self) -> None:
        with self._lock:
            if self._sock is None or self._start is None or self._closed or self._started:
                return
            sock, start = self._sock, self._start
            self._start = None
        try:
            started = start(sock)
        except Exception:
            # Whoever takes the dial meets the failure again, as a fresh connect would.
            sock.close()
            with self._lock:
                self._sock = None
            return
        with self._lock:
            self._started = started
            if self._closed:
                started.close()

    def take(self) -> tuple[socket.socket, Closable] | None:
        """Wait for the connection (up to its timeout); the socket and what ``start``
        made of it, or the error connecting raised (``OSError``, as a connect raises it).
        None when there is nothing to take (closed, or ``start`` failed): connect anew.
        Once taken, closing them is the taker's business."""
        self._connected.wait()
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._sock is None or self._started is None or self._closed:
                return None
            sock, started = self._sock, self._started
            self._sock = self._started = None
            self._closed = True
        return sock, started

    def close(self) -> None:
        """Drop the connection (or, still connecting, drop it when it connects)."""
        with self._lock:
            self._closed = True
            sock, started = self._sock, self._started
            self._sock = self._started = None
        if started is not None:
            with contextlib.suppress(Exception):
                started.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
