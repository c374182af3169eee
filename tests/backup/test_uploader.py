"""The uploader's bound on what is in flight: packs share ``max_bytes``, and a large
file's segments go two at a time (the store busy with both) but never three."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from forge_ci.backup.format.keys import generate_identity
from forge_ci.backup.repo import Repository
from forge_ci.backup.uploader import Uploader
from forge_ci.store.memory import MemoryStore

MIB = 1024 * 1024


class _HeldStore(MemoryStore):
    """Every put waits until the test lets it finish; ``entered`` counts puts begun."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        self.entered.release()
        self.release.acquire()
        return super().put(key, chunks)


def _uploader(store: _HeldStore) -> Uploader:
    identity = generate_identity()
    repo = Repository(store, "s", "e", recipients=[identity.recipient], identities=[identity])
    return Uploader(repo, max_bytes=10 * MIB)


def test_two_segments_travel_at_once_and_a_third_waits_for_room() -> None:
    store = _HeldStore()
    with _uploader(store) as uploader:
        for name in ("a", "b"):  # 8 MiB each: over max_bytes together, still both go
            uploader.submit_sealed(name, [b"x" * (8 * MIB)], plain_size=8 * MIB)
        assert store.entered.acquire(timeout=5) and store.entered.acquire(timeout=5)
        waited = threading.Event()

        def third() -> None:
            uploader.wait_for_room(8 * MIB)
            waited.set()

        waiter = threading.Thread(target=third)
        waiter.start()
        assert not waited.wait(0.3)  # two in flight: no room for a third
        store.release.release()  # one put ends
        assert waited.wait(5)
        waiter.join()
        store.release.release()
        uploader.join()
    assert store.read_bytes("a") == store.read_bytes("b") == b"x" * (8 * MIB)


def test_packs_share_max_bytes() -> None:
    store = _HeldStore()
    with _uploader(store) as uploader:
        for i in range(5):  # 2 MiB packs: five fill the 10 MiB
            uploader.submit_sealed(f"p{i}", [b"p" * (2 * MIB)], plain_size=2 * MIB)
        for _ in range(5):
            assert store.entered.acquire(timeout=5)
        waited = threading.Event()
        waiter = threading.Thread(target=lambda: (uploader.wait_for_room(2 * MIB),
                                                  waited.set()))
        waiter.start()
        assert not waited.wait(0.3)
        store.release.release()
        assert waited.wait(5)
        waiter.join()
        for _ in range(4):
            store.release.release()
        uploader.join()
    assert len(list(store.list("p"))) == 5
