"""Process-wide memory settings: the malloc tuning and the read size that relies on it.

:func:`tune_malloc` keeps the C heap from holding on to freed buffers (glibc only; a
no-op elsewhere). It changes the whole process, so only an entry point calls it,
once, before any thread starts.

Backups and restores move multi-megabyte buffers (packs, multipart parts) between
threads. glibc's malloc raises its mmap threshold each time a large block is freed,
up to 32 MiB, so later buffers come from per-thread arenas and their pages stay
resident after ``free``: peak RSS grows with the number of threads rather than
with what is alive. A fixed threshold keeps every buffer of 256 KiB or more in its
own mapping, returned to the system on ``free``; two arenas are plenty for a pool
that mostly waits on sockets. Same effect as ``MALLOC_MMAP_THRESHOLD_=262144
MALLOC_ARENA_MAX=2`` in the environment, applied from inside the process.

Process-wide, so it is applied once, by the entry point (:func:`forge_ci.cli.main`).

:data:`READ_SIZE` is the one size for reads from processes, files and S3 bodies
(backup and store layers alike): below ``MMAP_THRESHOLD``, so its buffers come from
the heap and are reused rather than mapped and faulted in on every read.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
READ_SIZE = 128 * 1024


def tune_malloc() -> bool:
    """Apply the settings above; False where this is not glibc."""
    try:
        # The symbols already loaded into this process (the C library's among them):
        # no ctypes.util.find_library, which runs ``ldconfig -p`` at every start.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, 2))


def release_freed_heap() -> bool:
    """Give the free pages of the C heap back to the system (glibc's ``malloc_trim``;
    False elsewhere). Chunks below ``MMAP_THRESHOLD`` (a backup's sealed objects are
    chunks of tens of KiB) come from the heap, and glibc keeps freed heap pages
    resident: what a backup's next step allocates (a media library's index pages,
    manifest, hash cache) would otherwise come on top of ~10 MiB that holds nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
