"""Store locks, so a prune never deletes objects a running backup relies on.

A backup takes a *shared* lock, a prune an *exclusive* one. A lock is an object
``locks/<kind>-<unix time>-<random>``: the kind and time are in the key because the
backup job cannot decrypt anything; the body (age, as every object) says who holds it.
Taking a lock = write it, then list: if a conflicting live lock exists, delete ours
and fail. Two contenders that race may both fail; neither proceeds wrongly.

A holder refreshes its lock (new key, then the old one deleted) every
``refresh_every`` seconds; a lock older than ``stale_after`` is a crashed run's
leftover and is ignored (prune deletes it). The store has no atomic create, so this
is advisory: enough for scheduled jobs, not a mutex for hostile writers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from forge_ci.backup.format.age import Recipient
from forge_ci.backup.layout import LOCKS
from forge_ci.backup.objects import seal
from forge_ci.errors import LockedError
from forge_ci.store import ObjectStore, StoreError

Kind = Literal["shared", "exclusive"]
_KEY = re.compile(r"^locks/(shared|exclusive)-(\d{1,12})-([0-9a-f]{16})$")
STALE_AFTER = 3600.0
REFRESH_EVERY = 600.0


@dataclass(frozen=True)
class LockInfo:
    key: str
    kind: Kind
    time: float


def list_locks(store: ObjectStore) -> list[LockInfo]:
    out = []
    for key in store.list(LOCKS):
        m = _KEY.match(key)
        if m:
            kind: Kind = "shared" if m.group(1) == "shared" else "exclusive"
            out.append(LockInfo(key, kind, float(m.group(2))))
    return out


def stale_locks(store: ObjectStore, *, now: float | None = None,
                stale_after: float = STALE_AFTER) -> list[LockInfo]:
    now = time.time() if now is None else now
    return [lock for lock in list_locks(store) if now - lock.time > stale_after]


class StoreLock:
    """``with StoreLock(store, "shared", recipients, who="..."):`` holds the lock."""

    def __init__(self, store: ObjectStore, kind: Kind, recipients: Sequence[Recipient], *,
                 who: str = "", stale_after: float = STALE_AFTER,
                 refresh_every: float = REFRESH_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        self._store, self.kind, self._recipients = store, kind, recipients
        self._who = who or f"{socket.gethostname()} pid {os.getpid()}"
        self._stale_after, self._refresh_every, self._clock = stale_after, refresh_every, clock
        self.key: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def __enter__(self) -> StoreLock:
        self.key = self._write()
        conflict = self._conflict()
        if conflict is not None:
            self._delete(self.key)
            self.key = None
            age = int(self._clock() - conflict.time)
            what = "a prune" if conflict.kind == "exclusive" else "a backup"
            raise LockedError(
                f"{self._store.url}: {what} holds the store (lock {conflict.key}, "
                f"taken {age}s ago)",
                hint=f"wait for it to finish; a lock older than {int(self._stale_after)}s "
                     "is ignored as stale")
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                        name="forge-lock-refresh")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._mutex:
            if self.key is not None:
                self._delete(self.key)
                self.key = None

    def _write(self) -> str:
        now = self._clock()
        key = f"{LOCKS}{self.kind}-{int(now)}-{os.urandom(8).hex()}"
        body = json.dumps({"kind": self.kind, "time": now, "who": self._who}).encode()
        self._store.put(key, seal([body], self._recipients, mode="compress"))
        return key

    def _conflict(self) -> LockInfo | None:
        now = self._clock()
        for lock in list_locks(self._store):
            if lock.key == self.key or now - lock.time > self._stale_after:
                continue
            if self.kind == "exclusive" or lock.kind == "exclusive":
                return lock
        return None

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_every):
            try:
                with self._mutex:
                    if self.key is None:
                        return
                    old, self.key = self.key, self._write()
                    self._delete(old)
            except StoreError:
                continue  # the run itself will hit the store error and stop

    def _delete(self, key: str) -> None:
        # A leftover lock goes stale and is removed by the next prune.
        with contextlib.suppress(StoreError):
            self._store.delete(key)
