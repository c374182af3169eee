"""Progress of long work (ship, backup, verify, restore) that would otherwise be silent.

On a terminal one live line is rewritten in place (carriage return) as the work
advances; anywhere else (CI logs, files) a plain line is written every
``interval`` seconds, so a long step shows it is alive without flooding the log::

    shipping: 1,234/4,300 files, 31.2 MiB/75.0 MiB

The clock and the interval are passed in (tests pass a fake clock); a short step
prints nothing in CI. :meth:`forge_ci.gha.Runner.progress` builds one for a command.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, TextIO

from forge_ci.units import human_size

DEFAULT_INTERVAL = 5.0  # seconds between plain lines in CI
LIVE_INTERVAL = 0.2  # seconds between rewrites of a terminal's live line


class Progress:
    """Counts files and bytes done out of (optional) totals, and shows them now and then.

    ``advance`` may be called from several threads. Use as a context manager, or call
    :meth:`done` at the end: it ends a terminal's live line.
    """

    def __init__(self, what: str, *, files: int | None = None, nbytes: int | None = None,
                 write: Callable[[str], None] = lambda _line: None, live: TextIO | None = None,
                 interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total_files, self.total_bytes = what, files, nbytes
        self.files = self.bytes = 0
        self._write, self._live = write, live
        self._interval = LIVE_INTERVAL if live is not None else interval
        self._clock = clock
        self._last = clock()
        self._shown = 0  # lines written (CI) or rewrites (terminal)
        self._width = 0
        self._lock = threading.Lock()

    def line(self) -> str:
        files = f"{self.files:,}" + (f"/{self.total_files:,}" if self.total_files else "")
        size = human_size(self.bytes) + (f"/{human_size(self.total_bytes)}"
                                         if self.total_bytes else "")
        return f"{self.what}: {files} files, {size}"

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            now = self._clock()
            if now - self._last >= self._interval:
                self._last = now
                self._show()

    def set(self, files: int, nbytes: int) -> None:
        """Set the counts (for work measured as a position, not in increments)."""
        with self._lock:
            self.files, self.bytes = 0, 0
        self.advance(files, nbytes)

    def _show(self) -> None:
        text = self.line()
        self._shown += 1
        if self._live is None:
            self._write(text)
            return
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._live.write(f"\r{text}{pad}")
        self._live.flush()

    def done(self) -> None:
        """End the live line with the final counts; in CI, a last line if any was shown."""
        with self._lock:
            if self._shown:
                self._show()
                if self._live is not None:
                    self._live.write("\n")
                    self._live.flush()
            self._shown = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.done()


class MakeProgress(Protocol):
    """What callers are handed: ``make(what, files=..., nbytes=...)`` -> :class:`Progress`."""

    def __call__(self, what: str, *, files: int | None = None,
                 nbytes: int | None = None) -> Progress: ...


def silent(what: str, *, files: int | None = None, nbytes: int | None = None) -> Progress:
    """A :class:`Progress` that shows nothing (library default, tests)."""
    return Progress(what, files=files, nbytes=nbytes, interval=float("inf"))
