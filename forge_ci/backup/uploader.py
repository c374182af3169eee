"""Parallel puts, bounded in memory, with one set of counters.

A WordPress uploads tree is mostly images of a few hundred KiB: put one at a time,
each would cost a full store round trip. So the caller's thread does the CPU work
(hash, compress, encrypt) and hands every object it sealed whole - a pack of small
files or a segment of a large one (see :mod:`forge_ci.backup.pack`) - to a pool of
``workers`` uploader threads. At most ``workers`` objects and ``max_bytes`` sealed
bytes (or two objects, whatever their size: a large file's 8 MiB segments) wait or
travel at any time, so :meth:`Uploader.submit_sealed` blocks when the store is slower
than the caller; :meth:`Uploader.wait_for_room` lets a caller wait before it seals.

:meth:`Uploader.join` returns only when every put is stored and raises the first
failure; the first failure also stops further submissions. Nothing here decides
the commit order: the caller writes the manifest after ``join``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from forge_ci.backup.repo import Repository

SMALL = 1024 * 1024
MAX_BYTES = 10 * 1024 * 1024  # sealed objects waiting or in flight


class Uploader:
    def __init__(self, repo: Repository, *, workers: int = 8,
                 max_bytes: int = MAX_BYTES) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._repo = repo
        self._workers, self._max_bytes = workers, max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-put")
        self._cond = threading.Condition()
        self._in_flight = 0  # objects queued or being put
        self._in_flight_bytes = 0
        self._futures: set[Future[None]] = set()
        self._error: BaseException | None = None
        self.objects = 0
        self._sizes: dict[str, tuple[int, int]] = {}
        self.stored_bytes = 0  # encrypted bytes sent to the store
        self.plain_bytes = 0

    def submit_sealed(self, key: str, pieces: list[bytes], *, plain_size: int,
                      sha256: str | None = None) -> None:
        """Queue the put of an object sealed by the caller (its ``pieces`` in order,
        with their SHA-256 when the caller has it); blocks while the pool is full."""
        self._raise_if_failed()
        self._start(key, pieces, sum(len(p) for p in pieces), plain_size, sha256)

    def wait_for_room(self, size: int) -> None:
        """Block until an object of ``size`` sealed bytes could go at once: a caller
        about to seal one waits here first, so it never holds a sealed object on top
        of all those in flight."""
        with self._cond:
            self._wait_for_room(size)
        self._raise_if_failed()

    def join(self) -> None:
        """Wait for every queued put; raise the first failure."""
        while True:
            with self._cond:
                pending = list(self._futures)
            if not pending:
                break
            for f in pending:
                _wait(f)
        self._raise_if_failed()

    # --- internals ------------------------------------------------------------------

    def _start(self, key: str, chunks: list[bytes], size: int, plain_size: int,
               sha256: str | None) -> Future[None]:
        with self._cond:
            self._wait_for_room(size)
            if self._error is not None:
                raise self._error
            self._in_flight += 1
            self._in_flight_bytes += size
            try:
                future = self._pool.submit(self._put, key, chunks, plain_size, sha256)
            except BaseException:
                self._in_flight -= 1
                self._in_flight_bytes -= size
                raise
            self._futures.add(future)
        future.add_done_callback(lambda f: self._done(f, size))
        return future

    def discard(self, keys: Iterable[str]) -> None:
        """Delete objects this uploader stored that turned out not to be wanted (a
        file's segments whose bytes changed while read); call after :meth:`join`."""
        for key in keys:
            self._repo.store.delete(key)
            with self._cond:
                stored, plain = self._sizes.pop(key, (0, 0))
                self.objects -= 1
                self.stored_bytes -= stored
                self.plain_bytes -= plain

    def _put(self, key: str, chunks: list[bytes], plain_size: int,
             sha256: str | None) -> None:
        store = self._repo.store
        stored = store.put(key, chunks) if sha256 is None else store.put_sealed(key, chunks, sha256)
        with self._cond:
            self.objects += 1
            self.stored_bytes += stored
            self.plain_bytes += plain_size
            self._sizes[key] = (stored, plain_size)

    def _done(self, future: Future[None], size: int) -> None:
        exc = None if future.cancelled() else future.exception()
        with self._cond:
            self._in_flight -= 1
            self._in_flight_bytes -= size
            self._futures.discard(future)
            if exc is not None and self._error is None:
                self._error = exc
            self._cond.notify_all()

    def _wait_for_room(self, size: int) -> None:
        """With the lock held: until ``size`` fits, nothing is in flight, or a put failed."""
        while self._error is None and self._in_flight > 0 and not self._fits(size):
            self._cond.wait()

    def _fits(self, size: int) -> bool:
        """Whether one more object of ``size`` may be in flight: ``max_bytes`` in all,
        but always two of any size (two segments of a large file: the store receives
        both at once rather than one after the other)."""
        return (self._in_flight < self._workers
                and self._in_flight_bytes + size <= max(self._max_bytes, 2 * size))

    def _raise_if_failed(self) -> None:
        with self._cond:
            error = self._error
        if error is not None:
            raise error

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # On error, queued puts are cancelled; running ones finish or fail cleanly.
        self._pool.shutdown(wait=True, cancel_futures=exc is not None)


def _wait(future: Future[None]) -> None:
    """Block until ``future`` ends, whatever its outcome."""
    if not future.cancelled():
        future.exception()
