"""Throughput of forge's compress+encrypt (and decrypt+decompress) against the reference
`zstd | age` pipeline on the same data, in the same process run.

    .venv/bin/python bench/bench_age.py [--mib 64]

Prints MB/s for each side and the ratio forge/reference (above 1.0: forge is faster;
the CLI side includes starting two processes and piping through them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from forge_ci.backup.format.age import decrypt_iter, encrypt_iter
from forge_ci.backup.format.keys import format_identity_file, generate_identity, parse_identities
from forge_ci.backup.format.zstd import compress_iter, decompress_iter

PIECE = 1024 * 1024


def sql_like(size: int) -> bytes:
    rows = b"".join(
        b"INSERT INTO wp_postmeta VALUES (%d, %d, '_edit_lock', '%d:1');\n" % (i, i * 7, i * 13)
        for i in range(size // 40)
    )
    return rows[:size]


def pieces(data: bytes) -> Iterator[bytes]:
    return (data[i : i + PIECE] for i in range(0, len(data), PIECE))


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(cmd: str, data: bytes) -> int:
    proc = subprocess.run(cmd, shell=True, input=data, capture_output=True, check=True)
    return len(proc.stdout)


def bench_one(name: str, data: bytes, filename: str, key: Path) -> None:
    [identity] = parse_identities(key.read_text())
    recipient = identity.recipient
    blob: list[bytes] = []

    def backup() -> int:
        blob.extend(encrypt_iter(compress_iter(pieces(data), name=filename), [recipient]))
        return sum(len(b) for b in blob)

    def restore() -> int:
        return sum(len(b) for b in decompress_iter(decrypt_iter(blob, [identity])))

    t_ours, out_size = timed(backup)
    t_cli, _ = timed(lambda: run(f"zstd -3 -q -c | age -r {recipient}", data))
    report(name, "backup", len(data), t_ours, t_cli, out_size)
    encrypted = b"".join(blob)
    t_ours, n = timed(restore)
    t_cli, m = timed(lambda: run(f"age -d -i {key} | zstd -d -q -c", encrypted))
    assert n == m == len(data)
    report(name, "restore", len(data), t_ours, t_cli, len(encrypted))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    size = parser.parse_args().mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp, "key")
        key.write_text(format_identity_file(generate_identity()).reveal())
        print(f"{'data':8} {'step':8} {'forge MB/s':>11} {'cli MB/s':>9} {'ratio':>6} {'size':>7}")
        bench_one("sql", sql_like(size), "dump.sql", key)
        bench_one("random", os.urandom(size), "photo.jpg", key)


def report(name: str, step: str, size: int, ours: float, cli: float, out: int) -> None:
    mb = size / 1e6
    print(
        f"{name:8} {step:8} {mb / ours:11.0f} {mb / cli:9.0f} {cli / ours:6.2f} {out / 2**20:6.1f}M"
    )


if __name__ == "__main__":
    main()
