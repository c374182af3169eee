"""Parallel puts, bounded in memory, with one set of counters.

A WordPress uploads tree is mostly images of a few hundred KiB: put one at a time,
each would cost a full store round trip. So the caller's thread does the CPU work
(hash, compress, encrypt) and hands every finished object to a pool of ``workers``
uploader threads:

* an object sealed whole by the caller (a pack of small files, see
  :mod:`forge_ci.backup.pack`) is queued as bytes; at most ``workers`` objects and
  ``max_bytes`` sealed bytes wait or travel at any time, so
  :meth:`Uploader.submit_sealed` blocks when the store is slower than the caller;
* a large object is sealed chunk by chunk in the caller's thread and streamed to a
  worker through a small bounded queue (:meth:`Uploader.put_stream` returns when
  the last chunk is handed over; the store still buffers one part at a time).
  If the caller's stream raises, the put is abandoned (a multipart upload is
  aborted) before the exception propagates.

:meth:`Uploader.join` returns only when every put is stored and raises the first
failure; the first failure also stops further submissions. Nothing here decides
the commit order: the caller writes the manifest after ``join``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from types import TracebackType

from forge_ci.backup.compress import Mode
from forge_ci.backup.objects import seal
from forge_ci.backup.repo import Repository

SMALL = 1024 * 1024
MAX_BYTES = 8 * 1024 * 1024  # sealed small objects waiting or in flight
_STREAM_DEPTH = 8  # sealed chunks (about 64 KiB each) queued per large put
_POLL = 0.5  # seconds between checks that a large put's worker is still alive


class _Abandon:
    """Queue marker: the caller's stream failed with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Uploader:
    def __init__(self, repo: Repository, *, workers: int = 8,
                 max_bytes: int = MAX_BYTES) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._repo = repo
        self._workers, self._max_bytes = workers, max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-put")
        self._cond = threading.Condition()
        self._closing = threading.Event()  # set on exit: no large stream is fed any more
        self._in_flight = 0  # objects queued or being put
        self._in_flight_bytes = 0
        self._futures: set[Future[None]] = set()
        self._error: BaseException | None = None
        self.objects = 0
        self.stored_bytes = 0  # encrypted bytes sent to the store
        self.plain_bytes = 0

    def submit_sealed(self, key: str, pieces: list[bytes], *, plain_size: int) -> None:
        """Queue the put of an object sealed by the caller (its ``pieces`` in order);
        blocks while the pool is full."""
        self._raise_if_failed()
        self._start(key, pieces, sum(len(p) for p in pieces), plain_size)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, name: str | None = None,
                   mode: Mode = "auto", plain_size: int = 0) -> None:
        """Seal a large stream here while a worker puts it; returns once it is all
        handed over. An exception of ``chunks`` abandons the put, then propagates."""
        self._raise_if_failed()
        pipe: queue.Queue[object] = queue.Queue(maxsize=_STREAM_DEPTH)
        future = self._start(key, _drain(pipe, self._closing), 0, plain_size)
        sealed = seal(chunks, self._repo.recipients, name=name, mode=mode)
        try:
            for chunk in sealed:
                if not _hand_over(pipe, chunk, future):
                    break  # the put ended early: its error is raised below
            else:
                _hand_over(pipe, _END, future)
        except BaseException as exc:
            _hand_over(pipe, _Abandon(exc), future)
            _wait(future)  # the store has abandoned the put when this returns
            raise
        if future.done():
            if future.cancelled():
                raise CancelledError(f"put of {key} was cancelled")
            error = future.exception()
            if error is not None:
                raise error

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

    def _start(self, key: str, chunks: Iterable[bytes], size: int,
               plain_size: int) -> Future[None]:
        with self._cond:
            while self._error is None and self._in_flight > 0 and (
                    self._in_flight >= self._workers
                    or self._in_flight_bytes + size > self._max_bytes):
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._in_flight += 1
            self._in_flight_bytes += size
            try:
                future = self._pool.submit(self._put, key, chunks, plain_size)
            except BaseException:
                self._in_flight -= 1
                self._in_flight_bytes -= size
                raise
            self._futures.add(future)
        future.add_done_callback(lambda f: self._done(f, size))
        return future

    def _put(self, key: str, chunks: Iterable[bytes], plain_size: int) -> None:
        stored = self._repo.store.put(key, chunks)
        with self._cond:
            self.objects += 1
            self.stored_bytes += stored
            self.plain_bytes += plain_size

    def _done(self, future: Future[None], size: int) -> None:
        exc = None if future.cancelled() else future.exception()
        with self._cond:
            self._in_flight -= 1
            self._in_flight_bytes -= size
            self._futures.discard(future)
            if exc is not None and self._error is None and not isinstance(exc, _Abandoned):
                self._error = exc
            self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        with self._cond:
            error = self._error
        if error is not None:
            raise error

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # On error, queued puts are cancelled; running ones finish or abort cleanly
        # (a large put whose feeder was interrupted gives up instead of waiting).
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=exc is not None)


class _Abandoned(Exception):
    """Raised inside a worker's stream when the caller abandoned a large put (the
    caller raises its own exception; this one is not the uploader's failure)."""


def _drain(pipe: queue.Queue[object], closing: threading.Event) -> Iterator[bytes]:
    while True:
        try:
            item = pipe.get(timeout=_POLL)
        except queue.Empty:
            if closing.is_set():
                raise _Abandoned() from None
            continue
        if item is _END:
            return
        if isinstance(item, _Abandon):
            raise _Abandoned() from item.error
        assert isinstance(item, bytes)
        yield item


def _hand_over(pipe: queue.Queue[object], item: object, future: Future[None]) -> bool:
    """Queue ``item`` for the worker; False if the worker's put already ended."""
    while True:
        if future.done():
            return False
        try:
            pipe.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue


def _wait(future: Future[None]) -> None:
    """Block until ``future`` ends, whatever its outcome."""
    if not future.cancelled():
        future.exception()
