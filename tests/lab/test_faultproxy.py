"""The fault proxy on raw sockets: exact byte counts, half-close, resets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from lab.faultproxy import FaultProxy


class Sink:
    """A TCP server that records what it receives and echoes it back."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        got = bytearray()
        with conn:
            try:
                while data := conn.recv(65536):
                    got += data
                    conn.sendall(data)
            except OSError:
                pass
        self.received.append(bytes(got))


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    yield server
    server.server.close()


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        echoed = bytearray()
        while data := conn.recv(65536):
            echoed += data
    return bytes(echoed)


def wait_for(predicate: Callable[[], bool]) -> None:
    for _ in range(100):
        if predicate():
            return
        threading.Event().wait(0.05)
    raise AssertionError("condition not reached in 5s")


def test_forwards_both_ways_with_half_close(
    sink: Sink, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(sink.port)
    assert exchange(proxy.port, b"a" * 300_000) == b"a" * 300_000
    wait_for(lambda: proxy.stats().active == 0)
    assert proxy.stats().bytes_up == proxy.stats().bytes_down == 300_000


def test_drop_after_exact_bytes_then_recovers(
    sink: Sink, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(sink.port)
    proxy.set(drop_after_bytes=4096, drop_connections=1)
    with pytest.raises(OSError):
        exchange(proxy.port, b"b" * 100_000)
        raise OSError("the connection should have been cut")  # reached only if not cut
    wait_for(lambda: len(sink.received) == 1)
    assert sink.received[0] == b"b" * 4096
    assert proxy.stats().dropped == 1
    assert exchange(proxy.port, b"c" * 10_000) == b"c" * 10_000


def test_refuse_resets_new_connections(sink: Sink, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(sink.port)
    proxy.set(refuse=True)
    with pytest.raises(OSError):
        exchange(proxy.port, b"x")
        raise OSError("not refused")
    assert proxy.stats().refused == 1 and proxy.stats().accepted == 0
