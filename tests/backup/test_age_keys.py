"""Key text forms, FORGE_BACKUP_RECIPIENT / _IDENTITY parsing, and secret redaction."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge_ci.backup import session
from forge_ci.backup.errors import KeyFormatError
from forge_ci.backup.format.age import decrypt_iter, encrypt_iter
from forge_ci.backup.format.keys import (
    Secret,
    X25519Identity,
    X25519Recipient,
    bech32_decode,
    bech32_encode,
    format_identity_file,
    generate_identity,
    parse_identities,
    parse_recipients,
)
from forge_ci.errors import SecretError


@pytest.fixture(scope="module")
def identity_text() -> str:
    return generate_identity().to_secret().reveal()


def test_text_forms_round_trip(identity_text: str) -> None:
    identity = X25519Identity.from_string(identity_text)
    assert identity.to_secret().reveal() == identity_text
    assert identity_text.startswith("AGE-SECRET-KEY-1") and identity_text.isupper()
    recipient_text = str(identity.recipient)
    assert recipient_text.startswith("age1") and recipient_text.islower()
    assert X25519Recipient.from_string(recipient_text) == identity.recipient
    # bech32 is case-insensitive as a whole
    assert X25519Identity.from_string(identity_text.lower()).recipient == identity.recipient


def test_bech32_rejects_bad_strings() -> None:
    good = str(generate_identity().recipient)
    for bad in (
        good[:-1] + ("q" if good[-1] != "q" else "p"),  # checksum
        good[:10] + good[10:].upper(),  # mixed case
        good.replace("1", "", 1),  # no separator
        good + "b",
    ):
        with pytest.raises(ValueError):
            bech32_decode(bad)


@given(st.binary(max_size=80))
def test_bech32_round_trip(data: bytes) -> None:
    for hrp in ("age", "AGE-SECRET-KEY-"):
        text = bech32_encode(hrp, data)
        assert text == (text.upper() if hrp.isupper() else text.lower())
        assert bech32_decode(text) == (hrp.lower(), data)


def test_identity_never_prints_its_secret() -> None:
    identity = generate_identity()
    secret_text = identity.to_secret().reveal()
    for shown in (
        repr(identity),
        str(identity),
        repr(identity.to_secret()),
        str(identity.to_secret()),
        f"{identity!r}",
        repr(format_identity_file(identity)),
    ):
        assert secret_text not in shown
        assert "AGE-SECRET-KEY" not in shown
    assert str(identity.recipient) in repr(identity)
    with pytest.raises(TypeError):
        pickle.dumps(identity.to_secret())


def test_secrets_never_print() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)


def test_parse_recipients_file_syntax() -> None:
    a, b, c = (generate_identity().recipient for _ in range(3))
    text = f"# backup keys\n{a}, {b}\n\n  {c}   # laptop\n"
    assert parse_recipients(text) == [a, b, c]
    assert parse_recipients(f"{a} {b}") == [a, b]


def test_parse_recipients_refuses_a_private_key_without_echoing_it() -> None:
    identity = generate_identity()
    secret_text = identity.to_secret().reveal()
    with pytest.raises(KeyFormatError, match="line 2: this is a private key") as info:
        parse_recipients(f"{identity.recipient}\n{secret_text}\n")
    assert secret_text not in str(info.value) and secret_text not in repr(info.value)
    assert isinstance(info.value, SecretError)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "age1notakey", "ssh-ed25519 AAAA"])
def test_parse_recipients_errors(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        parse_recipients(text)
    assert info.value.hint


def test_parse_identities_accepts_age_keygen_output(tmp_path: Path) -> None:
    if shutil.which("age-keygen") is None:
        pytest.skip("age-keygen not installed")
    keyfile = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(keyfile)], check=True, capture_output=True)
    [identity] = parse_identities(Secret(keyfile.read_text()))
    assert f"# public key: {identity.recipient}" in keyfile.read_text()


def test_parse_identities_errors_do_not_echo(identity_text: str) -> None:
    almost = identity_text[:-1] + ("Q" if identity_text[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError, match="line 3: not an age identity") as info:
        parse_identities(f"# created\n{identity_text}\n{almost}\n")
    assert almost not in str(info.value) and identity_text not in str(info.value)
    with pytest.raises(KeyFormatError, match="no identity"):
        parse_identities("# nothing\n\n")


def test_multiple_identities_and_round_trip() -> None:
    one, two = generate_identity(), generate_identity()
    text = format_identity_file(one).reveal() + format_identity_file(two).reveal()
    identities = parse_identities(text)
    assert [str(i.recipient) for i in identities] == [str(one.recipient), str(two.recipient)]
    assert b"".join(decrypt_iter(encrypt_iter([b"x"], [two.recipient]), identities)) == b"x"


def test_keys_from_the_environment() -> None:
    identity = generate_identity()
    environ = {
        "FORGE_BACKUP_RECIPIENT": str(identity.recipient),
        "FORGE_BACKUP_IDENTITY": format_identity_file(identity).reveal(),
    }
    assert session.recipients(environ) == [identity.recipient]
    assert [i.recipient for i in session.identities(environ)] == [identity.recipient]
    # Unset is no keys (the command that needs them says which secret is missing).
    assert session.recipients({}) == [] and session.identities({}) == []
