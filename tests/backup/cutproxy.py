"""A loopback TCP proxy that cuts every connection after N bytes server -> client.

The lab's FaultProxy closes sockets another of its threads is blocked reading,
which on Linux delays the reset until that read returns (for SSH: the next
keepalive, 15 s later). Here a cut is ``shutdown(SHUT_RDWR)`` on both sockets
first, which wakes every blocked reader at once, so the client sees the
connection die immediately.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CutProxy:
    def __init__(self, target_port: int, cut_after_down: int | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.cut_after_down = cut_after_down
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            limit = self.cut_after_down
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, None, pair),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit, pair),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None,
              pair: tuple[socket.socket, socket.socket]) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
