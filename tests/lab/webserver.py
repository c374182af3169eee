"""Plain HTTP test servers (``http.server``) served from a daemon thread."""

from __future__ import annotations

import socketserver
import threading


def serve(server: socketserver.TCPServer, poll_interval: float = 0.5) -> threading.Thread:
    """Serve ``server`` from a daemon thread (started) until its ``shutdown()``,
    which waits up to ``poll_interval`` seconds for the loop to notice.

    The listening socket gets a timeout. A connection reset before it is accepted
    leaves select() saying "readable" and a blocking accept() waiting for the next
    one (accept(2)), so ``shutdown()`` would wait forever (seen once in CI). With a
    timeout, accept() gives up, socketserver ignores the error, and the loop sees the
    shutdown request. Accepted sockets are blocking as before.
    """
    server.socket.settimeout(0.5)
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    return thread
