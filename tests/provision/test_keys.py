"""Key material: fingerprints as Hetzner and OpenSSH print them, known_hosts lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lab import require_binary
from lab.policy import lab_required

from forge_ci.provision.hostkeys import (
    generate_host_key,
    known_hosts_line,
    md5_fingerprint,
    parse_public,
)


@pytest.mark.lab
def test_md5_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = generate_host_key()
    (tmp_path / "key.pub").write_text(key.public + "\n")
    with lab_required():
        keygen = require_binary("ssh-keygen")
    done = subprocess.run([keygen, "-l", "-E", "md5", "-f", str(tmp_path / "key.pub")],
                          capture_output=True, text=True, check=True)
    assert f"MD5:{md5_fingerprint(key.public)} " in done.stdout


def test_known_hosts_lines() -> None:
    key = generate_host_key()
    assert known_hosts_line("203.0.113.7", 22, key.public) == f"203.0.113.7 {key.public}"
    assert known_hosts_line("203.0.113.7", 2222, key.public + " comment") == (
        f"[203.0.113.7]:2222 {key.public}")
    assert parse_public(key.public).get_name() == "ssh-ed25519"
    assert key.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key.private not in repr(key)
