"""age v1: round trips, interop with the reference /usr/bin/age both ways, rejections."""

from __future__ import annotations

import os
import shutil
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_ci.backup.errors import BackupFormatError, NoIdentityError
from forge_ci.backup.format import age
from forge_ci.backup.format.age import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    MAX_HEADER_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    Decryptor,
    Recipient,
    X25519Identity,
    decrypt_into,
    decrypt_iter,
    encrypt_iter,
)
from forge_ci.backup.format.keys import (
    Stanza,
    b64decode_canonical,
    b64encode_raw,
    format_identity_file,
    generate_identity,
    parse_identities,
)
from forge_ci.backup.format.zstd import compress_iter, decompress_iter

AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="reference age not installed")
SIZES = [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 5_000_000]


@pytest.fixture(scope="module")
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def keyfile(tmp_path: Path, ident: X25519Identity) -> Path:
    path = tmp_path / "key.txt"
    path.write_text(format_identity_file(ident).reveal())
    path.chmod(0o600)
    return path


def encrypt_bytes(data: bytes, recipients: list[Recipient]) -> bytes:
    return b"".join(encrypt_iter([data], recipients))


def decrypt_bytes(data: bytes, identities: list[X25519Identity]) -> bytes:
    return b"".join(decrypt_iter([data], identities))


def pieces(data: bytes, sizes: tuple[int, ...] = (1, 7, 4096, 70_000)) -> Iterator[bytes]:
    """Feed data in awkward piece sizes that straddle chunk boundaries."""
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        yield data[pos : pos + step]
        pos, i = pos + step, i + 1


def run_age(*args: str, data: bytes = b"") -> bytes:
    proc = subprocess.run([AGE or "age", *args], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(ident: X25519Identity, size: int) -> None:
    data = os.urandom(size)
    encrypted = b"".join(encrypt_iter(pieces(data), [ident.recipient]))
    header_size = encrypted.index(b"\n", encrypted.index(b"\n---") + 1) + 1
    chunks = max(1, -(-size // CHUNK_SIZE))  # an empty plaintext still has a final chunk
    assert len(encrypted) == header_size + NONCE_SIZE + size + chunks * TAG_SIZE
    assert b"".join(decrypt_iter(pieces(encrypted), [ident])) == data


def test_output_stays_chunk_sized(ident: X25519Identity) -> None:
    """A 5 MB input given whole still comes out in bounded pieces."""
    outs = list(encrypt_iter([os.urandom(5_000_000)], [ident.recipient]))
    assert max(len(o) for o in outs) <= age.MAX_UPDATE + 2 * ENC_CHUNK_SIZE


def test_header_parsed_byte_by_byte(ident: X25519Identity) -> None:
    encrypted = encrypt_bytes(b"x" * 1000, [ident.recipient])
    dec = Decryptor([ident])
    out = b"".join(dec.update(encrypted[i : i + 1]) for i in range(len(encrypted)))
    assert out + dec.finish() == b"x" * 1000


def test_multiple_recipients_each_can_decrypt() -> None:
    idents = [generate_identity() for _ in range(3)]
    encrypted = encrypt_bytes(b"secret dump", [i.recipient for i in idents])
    assert encrypted.count(b"\n-> X25519 ") == 3
    for one in idents:
        assert decrypt_bytes(encrypted, [one]) == b"secret dump"
    # an identity list where only the last one matches
    assert decrypt_bytes(encrypted, [generate_identity(), idents[2]]) == b"secret dump"


def test_misuse_raises_value_error(ident: X25519Identity) -> None:
    with pytest.raises(ValueError):
        age.Encryptor([])
    enc = age.Encryptor([ident.recipient])
    enc.finish()
    with pytest.raises(ValueError):
        enc.update(b"late")


# --- interop with the reference implementation --------------------------------------


@needs_age
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2_000_000])
def test_ours_decrypts_with_reference_age(
    tmp_path: Path, ident: X25519Identity, keyfile: Path, size: int
) -> None:
    data = os.urandom(size)
    obj = tmp_path / "obj.age"
    obj.write_bytes(encrypt_bytes(data, [ident.recipient]))
    assert run_age("-d", "-i", str(keyfile), str(obj)) == data


@needs_age
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2_000_000])
def test_reference_age_decrypts_with_ours(ident: X25519Identity, size: int) -> None:
    data = os.urandom(size)
    encrypted = run_age("-r", str(ident.recipient), data=data)
    assert b"".join(decrypt_iter(pieces(encrypted), [ident])) == data


@needs_age
def test_reference_keygen_identity_works(tmp_path: Path) -> None:
    keyfile = tmp_path / "k.txt"
    subprocess.run(["age-keygen", "-o", str(keyfile)], check=True, capture_output=True)
    [identity] = parse_identities(keyfile.read_text())
    public = subprocess.run(
        ["age-keygen", "-y", str(keyfile)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert str(identity.recipient) == public
    encrypted = run_age("-r", public, data=b"from keygen")
    assert decrypt_bytes(encrypted, [identity]) == b"from keygen"


@needs_age
def test_multiple_recipients_interop(tmp_path: Path) -> None:
    idents = [generate_identity() for _ in range(2)]
    obj = tmp_path / "obj.age"
    obj.write_bytes(encrypt_bytes(b"both", [i.recipient for i in idents]))
    for n, one in enumerate(idents):
        key = tmp_path / f"k{n}"
        key.write_text(format_identity_file(one).reveal())
        assert run_age("-d", "-i", str(key), str(obj)) == b"both"
    theirs = run_age("-r", str(idents[0].recipient), "-r", str(idents[1].recipient), data=b"theirs")
    assert decrypt_bytes(theirs, [idents[1]]) == b"theirs"


# --- rejections -------------------------------------------------------------------------


def split_file(encrypted: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(header, nonce, encrypted chunks) of an age file."""
    end = encrypted.index(b"\n", encrypted.index(b"\n---") + 1) + 1
    payload = encrypted[end + 16 :]
    chunks = [payload[i : i + ENC_CHUNK_SIZE] for i in range(0, len(payload), ENC_CHUNK_SIZE)]
    return encrypted[:end], encrypted[end : end + 16], chunks


@pytest.fixture(scope="module")
def three_chunks(ident: X25519Identity) -> bytes:
    return encrypt_bytes(os.urandom(2 * CHUNK_SIZE + 500), [ident.recipient])


def rejects(data: bytes, ident: X25519Identity, match: str) -> None:
    with pytest.raises(BackupFormatError, match=match):
        decrypt_bytes(data, [ident])


def test_rejects_truncation_everywhere(ident: X25519Identity, three_chunks: bytes) -> None:
    header, nonce, chunks = split_file(three_chunks)
    rejects(header[:30], ident, "truncated")
    rejects(header + nonce[:5], ident, "truncated")
    rejects(header + nonce, ident, "truncated")
    rejects(header + nonce + chunks[0], ident, "truncated")  # final chunk missing
    rejects(header + nonce + chunks[0] + chunks[1], ident, "truncated")
    rejects(three_chunks[:-1], ident, "authentication")
    rejects(b"", ident, "truncated")


def test_truncation_detected_only_at_the_end(ident: X25519Identity, three_chunks: bytes) -> None:
    """The documented subtlety: authenticated chunks come out before truncation shows."""
    header, nonce, chunks = split_file(three_chunks)
    got = []
    with pytest.raises(BackupFormatError, match="truncated"):
        for piece in decrypt_iter([header + nonce + chunks[0] + chunks[1]], [ident]):
            got.append(piece)
    assert len(b"".join(got)) == CHUNK_SIZE  # chunk 0 was released, chunk 1 held back
    with pytest.raises(BackupFormatError):
        decrypt_bytes(header + nonce + chunks[0] + chunks[1], [ident])
    assert len(decrypt_bytes(three_chunks, [ident])) == 2 * CHUNK_SIZE + 500


def test_rejects_trailing_data(ident: X25519Identity, three_chunks: bytes) -> None:
    rejects(three_chunks + b"\x00", ident, "authentication")
    full = encrypt_bytes(os.urandom(CHUNK_SIZE), [ident.recipient])
    rejects(full + b"x" * 10, ident, "trailing data")
    rejects(full + full, ident, "trailing data")


def test_rejects_reordered_chunks(ident: X25519Identity, three_chunks: bytes) -> None:
    header, nonce, chunks = split_file(three_chunks)
    rejects(header + nonce + chunks[1] + chunks[0] + chunks[2], ident, "chunk 0")
    rejects(header + nonce + chunks[0] + chunks[0] + chunks[2], ident, "chunk 1")


def test_rejects_bit_flips(ident: X25519Identity, three_chunks: bytes) -> None:
    header, _, _ = split_file(three_chunks)
    for pos in (len(header) + 3, len(header) + 16 + 10, len(three_chunks) - 1):
        flipped = bytearray(three_chunks)
        flipped[pos] ^= 0x01
        rejects(bytes(flipped), ident, "authentication")


def test_rejects_bad_header_mac(ident: X25519Identity) -> None:
    encrypted = encrypt_bytes(b"data", [ident.recipient])
    header, rest = encrypted.split(b"\n--- ", 1)
    mac, payload = rest.split(b"\n", 1)
    other = b64encode_raw(bytes(32)).encode()
    rejects(header + b"\n--- " + other + b"\n" + payload, ident, "MAC mismatch")
    # a stanza changed after MAC computation (same key opens it: grease stanza added)
    tampered = header + b"\n-> grease x\n\n--- " + mac + b"\n" + payload
    rejects(tampered, ident, "MAC mismatch")


def test_rejects_non_canonical_base64(ident: X25519Identity) -> None:
    encrypted = encrypt_bytes(b"data", [ident.recipient])
    share = encrypted.split(b"-> X25519 ")[1].split(b"\n")[0].decode()
    # 32 bytes -> 43 chars: the last char carries 2 spare bits; set them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = share[:-1] + alphabet[alphabet.index(share[-1]) ^ 1]
    assert bumped != share
    with pytest.raises(ValueError):
        b64decode_canonical(bumped)
    rejects(encrypted.replace(share.encode(), bumped.encode()), ident, "X25519 stanza")
    padded = encrypted.replace(share.encode(), share.encode() + b"=")
    rejects(padded, ident, "X25519 stanza")


def test_rejects_malformed_headers(ident: X25519Identity) -> None:
    good = encrypt_bytes(b"data", [ident.recipient])
    rejects(b"age-encryption.org/v2\n" + good[22:], ident, "not an age v1")
    rejects(b"-----BEGIN AGE ENCRYPTED FILE-----\n", ident, "not an age v1")
    rejects(good.replace(b"-> X25519", b"->  X25519"), ident, "arguments")
    rejects(good.replace(b"\n--- ", b"\n---"), ident, "MAC line")
    line = good.split(b"\n")[2]
    rejects(good.replace(line, line + b"A" * 30), ident, "64 columns|canonical")


def test_rejects_huge_header(ident: X25519Identity) -> None:
    stanza = b"-> grease " + b"x" * 60 + b"\n\n"
    header = b"age-encryption.org/v1\n" + stanza * (MAX_HEADER_SIZE // len(stanza) + 1)
    rejects(header, ident, "larger than")
    rejects(header + b"--- " + b"A" * 43 + b"\n", ident, "larger than")
    rejects(
        b"age-encryption.org/v1\n" + b"-> a\n\n" * 200 + b"--- " + b"A" * 43 + b"\n",
        ident,
        "more than 128",
    )


def test_passphrase_file_is_not_opened(ident: X25519Identity) -> None:
    """A file written with `age -p` (one scrypt stanza) is addressed to no identity."""
    file_key = os.urandom(16)
    stanzas = [Stanza(("scrypt", b64encode_raw(os.urandom(16)), "18"), os.urandom(32))]
    encrypted = age.encode_header(stanzas, file_key) + bytes(16) + bytes(16)
    with pytest.raises(NoIdentityError, match="no identity matched"):
        decrypt_bytes(encrypted, [ident])


def test_rejects_unknown_recipient(ident: X25519Identity) -> None:
    encrypted = encrypt_bytes(b"data", [generate_identity().recipient])
    with pytest.raises(NoIdentityError, match="no identity matched"):
        decrypt_bytes(encrypted, [ident])


def test_rejects_empty_final_chunk_after_data(ident: X25519Identity) -> None:
    """64 KiB must be one full final chunk, not a full chunk plus an empty one."""
    file_key, nonce = os.urandom(16), os.urandom(16)
    stream = age._Stream(file_key, nonce)
    payload = stream.seal(bytes(CHUNK_SIZE), last=False) + stream.seal(b"", last=True)
    encrypted = age.encode_header(ident.recipient.wrap(file_key), file_key) + nonce + payload
    rejects(encrypted, ident, "empty final chunk")


def test_unknown_stanzas_are_ignored(ident: X25519Identity) -> None:
    file_key, nonce = os.urandom(16), os.urandom(16)
    stanzas = [Stanza(("example.com/grease", "a"), os.urandom(50)), *ident.recipient.wrap(file_key)]
    stream = age._Stream(file_key, nonce)
    encrypted = age.encode_header(stanzas, file_key) + nonce + stream.seal(b"hi", last=True)
    assert decrypt_bytes(encrypted, [ident]) == b"hi"


# --- properties -----------------------------------------------------------------------

SMALL = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SMALL
@given(data=st.binary(max_size=3 * CHUNK_SIZE), cuts=st.lists(st.integers(1, 90_000)))
def test_property_round_trip(ident: X25519Identity, data: bytes, cuts: list[int]) -> None:
    sizes = tuple(cuts) or (len(data) + 1,)
    encrypted = b"".join(encrypt_iter(pieces(data, sizes), [ident.recipient]))
    assert b"".join(decrypt_iter(pieces(encrypted, sizes), [ident])) == data


@SMALL
@given(data=st.binary(max_size=300), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_property_any_bit_flip_is_rejected(
    ident: X25519Identity, data: bytes, where: float, bit: int
) -> None:
    encrypted = bytearray(encrypt_bytes(data, [ident.recipient]))
    encrypted[int(where * len(encrypted))] ^= 1 << bit
    with pytest.raises((BackupFormatError, NoIdentityError)):
        decrypt_bytes(bytes(encrypted), [ident])


def test_pipeline_memory_is_flat(ident: X25519Identity) -> None:
    """64 MiB through compress+encrypt and back: Python never holds more than a few MiB."""
    piece = os.urandom(1024 * 1024)
    count = 64
    tracemalloc.start()
    try:
        encrypted = encrypt_iter(
            compress_iter((piece for _ in range(count)), mode="store"), [ident.recipient]
        )
        plain = decompress_iter(decrypt_iter(encrypted, [ident]))
        total = sum(len(p) for p in plain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == count * len(piece)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_rejects_low_order_share_and_bad_stanza_shapes(ident: X25519Identity) -> None:
    file_key, nonce = os.urandom(16), os.urandom(16)
    payload = age._Stream(file_key, nonce).seal(b"x", last=True)

    def with_stanza(args: tuple[str, ...], body: bytes) -> bytes:
        return age.encode_header([Stanza(args, body)], file_key) + nonce + payload

    zero_share = b64encode_raw(bytes(32))
    rejects(with_stanza(("X25519", zero_share), bytes(32)), ident, "low-order")
    rejects(with_stanza(("X25519",), bytes(32)), ident, "argument count")
    rejects(with_stanza(("X25519", zero_share, "extra"), bytes(32)), ident, "argument count")
    share = b64encode_raw(generate_identity().recipient.public_key)
    rejects(with_stanza(("X25519", share), bytes(31)), ident, "not 32 bytes")


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 500])
def test_decrypt_into_writes_the_plaintext_into_the_buffer(
        ident: X25519Identity, size: int) -> None:
    data = os.urandom(size)
    encrypted = encrypt_bytes(data, [ident.recipient])
    out = bytearray(size + 100)
    assert decrypt_into(pieces(encrypted), [ident], out) == size
    assert bytes(out[:size]) == data
    exact = bytearray(size)
    assert decrypt_into([encrypted], [ident], exact) == size and bytes(exact) == data


def test_decrypt_into_refuses_a_plaintext_larger_than_the_buffer(
        ident: X25519Identity, three_chunks: bytes) -> None:
    for room in (0, CHUNK_SIZE, 2 * CHUNK_SIZE + 499):
        with pytest.raises(BackupFormatError, match="larger than the space"):
            decrypt_into([three_chunks], [ident], bytearray(room))


def test_decrypt_into_fails_as_decrypt_iter_does(ident: X25519Identity,
                                                 three_chunks: bytes) -> None:
    """Same checks, same messages: truncation, trailing data, reordering, flips."""
    header, nonce, chunks = split_file(three_chunks)
    full = encrypt_bytes(os.urandom(CHUNK_SIZE), [ident.recipient])
    flipped = bytearray(three_chunks)
    flipped[-1] ^= 1
    for bad in (header + nonce, header + nonce + chunks[0] + chunks[1], three_chunks[:-1],
                three_chunks + b"\x00", full + b"x" * 10, full + full, bytes(flipped),
                header + nonce + chunks[1] + chunks[0] + chunks[2], b""):
        with pytest.raises(BackupFormatError) as want:
            decrypt_bytes(bad, [ident])
        with pytest.raises(BackupFormatError) as got:
            decrypt_into(pieces(bad), [ident], bytearray(4 * CHUNK_SIZE))
        assert got.value.message == want.value.message


@pytest.mark.parametrize("step", [1, 16, 4096, ENC_CHUNK_SIZE - 1, ENC_CHUNK_SIZE,
                                  ENC_CHUNK_SIZE + 1, 128 * 1024, 2 * ENC_CHUNK_SIZE])
def test_decrypt_into_gives_the_plaintext_whatever_the_reads_sizes(
        ident: X25519Identity, step: int) -> None:
    """Chunks are opened straight from the pieces given: however they fall across
    chunk boundaries (a read of exactly one chunk, a full last chunk), the plaintext
    is whole and in order."""
    for size in (CHUNK_SIZE, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 777):
        data = os.urandom(size)
        encrypted = encrypt_bytes(data, [ident.recipient])
        for start in (1, len(encrypted) - size - 3 * TAG_SIZE, step):
            # a first piece ending inside the header, at its end or later; then
            # reads of ``step`` bytes
            chunks = [encrypted[:start]] + [encrypted[i : i + step]
                                            for i in range(start, len(encrypted), step)]
            out = bytearray(size)
            assert decrypt_into(chunks, [ident], out) == size
            assert bytes(out) == data
