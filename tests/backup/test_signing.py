"""Signing keys: what `keygen --signing` makes, what FORGE_BACKUP_SIGNING_KEY and
backup.signers accept, and errors that never show a key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from forge_ci.backup.errors import KeyFormatError
from forge_ci.backup.format.keys import Secret
from forge_ci.backup.signing import SignerKey, SigningKey, parse_signing_key
from forge_ci.cli import main
from forge_ci.config.backup import BackupConfig


def test_keygen_signing_prints_the_secret_and_the_line_for_forge_yml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--signing"], {}) == 0
    printed = capsys.readouterr().out
    key = parse_signing_key(Secret(printed))  # the whole output pastes into the secret
    assert f'signers: ["{key.public}"]' in printed

    out = tmp_path / "signing.key"
    assert main(["keygen", "--signing", "--output", str(out), "--json"], {}) == 0
    shown = capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = parse_signing_key(Secret(out.read_text()))
    assert str(key.public) in shown and key.to_secret().reveal() not in shown
    BackupConfig(store="file:///srv/b", signers=(str(key.public),))  # pastes as printed
    assert main(["keygen", "--signing", "--output", str(out)], {}) == 2  # never overwrites


def test_signing_key_errors_name_the_line_never_the_value() -> None:
    key = SigningKey.generate()
    secret = key.to_secret().reveal()
    assert secret not in repr(key) and secret not in str(key)
    for text, why in ((str(key.public), "line 1: this is a public signing key"),
                      ("# comment\n" + secret[:-2] + "!!", "line 2: not a forge signing key"),
                      ("", "holds no signing key"),
                      (f"{secret}\n{SigningKey.generate().to_secret().reveal()}",
                       "more than one")):
        with pytest.raises(KeyFormatError, match=why) as e:
            parse_signing_key(Secret(text))
        assert secret[26:] not in str(e.value)
    assert parse_signing_key(Secret(f"\n# a comment\n  {secret}  \n")).public == key.public


def test_signers_and_paths_in_forge_yml() -> None:
    good = str(SigningKey.generate().public)
    for bad in ("ed25519:abc", good[:-2] + "==", good.replace("forge-sign", "forge-sig"),
                str(SigningKey.generate().to_secret().reveal())):
        with pytest.raises(ValidationError, match="forge-sign-ed25519:"):
            BackupConfig(store="file:///srv/b", signers=(bad,))
    with pytest.raises(ValidationError, match="listed twice"):
        BackupConfig(store="file:///srv/b", signers=(good, good))
    assert BackupConfig(store="file:///srv/b", signers=(good,)).signer_keys() == (
        SignerKey.from_string(good),)
    for path in ("current", "current/web/app/uploads", "releases/x", ".forge"):
        with pytest.raises(ValidationError, match="is deploy's"):
            BackupConfig(store="file:///srv/b", paths=(path,))
