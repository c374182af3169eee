"""Parallel puts of small objects, bounded in memory, with one set of counters.

Small files (a WordPress uploads tree is mostly images of a few hundred KiB) would
go up one round trip at a time; a few worker threads hide the latency. At most
``max_pending`` objects (each at most ``SMALL`` bytes) wait in memory, so memory is
bounded whatever the tree. Large objects stream through :meth:`Uploader.put_stream`
in the caller's thread. The first failure stops further submissions and is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from forge_ci.backup.compress import Mode
from forge_ci.backup.repo import Repository

SMALL = 1024 * 1024


class Uploader:
    def __init__(self, repo: Repository, *, workers: int = 8, max_pending: int = 16) -> None:
        self._repo = repo
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-put")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._error: BaseException | None = None
        self.objects = 0
        self.stored_bytes = 0  # encrypted bytes sent to the store
        self.plain_bytes = 0

    def submit(self, key: str, data: bytes, *, name: str | None = None) -> None:
        """Queue a put of ``data``; blocks while ``max_pending`` puts are in flight."""
        self._raise_if_failed()
        self._slots.acquire()
        try:
            future = self._pool.submit(self._put, key, [data], name, "auto", len(data))
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, name: str | None = None,
                   mode: Mode = "auto", plain_size: int = 0) -> None:
        """Put a large stream now, in this thread."""
        self._raise_if_failed()
        self._put(key, chunks, name, mode, plain_size)

    def join(self) -> None:
        """Wait for every queued put; raise the first failure."""
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                break
            for f in pending:
                f.exception()
        self._raise_if_failed()

    def _put(self, key: str, chunks: Iterable[bytes], name: str | None, mode: Mode,
             plain_size: int) -> None:
        stored = self._repo.put(key, chunks, name=name, mode=mode)
        with self._lock:
            self.objects += 1
            self.stored_bytes += stored
            self.plain_bytes += plain_size

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        with self._lock:
            self._futures.discard(future)
            exc = future.exception() if not future.cancelled() else None
            if exc is not None and self._error is None:
                self._error = exc

    def _raise_if_failed(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # On error, queued puts are cancelled; running ones finish or abort cleanly.
        self._pool.shutdown(wait=True, cancel_futures=exc is not None)
