"""FORGE_KNOWN_HOSTS as OpenSSH writes it: rotation windows, @revoked, @cert-authority."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from lab.sshd import SshHost, generate_ed25519

from forge_ci.errors import HostKeyError, SecretError
from forge_ci.remote.ssh import KnownHosts, connector


def other_key() -> str:
    """A well-formed ed25519 public key the lab host does not hold."""
    return " ".join(generate_ed25519().public.split()[:2])


def connect(host: SshHost, known_hosts: str) -> None:
    open_host = connector(host.private_key, known_hosts, timeout=10)
    opened = open_host(host.host, host.port, host.user)
    try:
        assert opened.run("echo ok").stdout == b"ok\n"
    finally:
        opened.close()


def key_part(line: str) -> str:
    return line.split(" ", 1)[1]


@pytest.mark.lab
def test_both_keys_of_a_rotation_window_are_accepted(sshd_host: SshHost) -> None:
    old = sshd_host.rotate_host_key()
    new = sshd_host.known_hosts
    connect(sshd_host, f"{old}\n{new}\n")
    connect(sshd_host, f"{new}\n{old}\n")


@pytest.mark.lab
def test_a_revoked_key_is_refused_even_when_also_pinned(sshd_host: SshHost) -> None:
    host_id = sshd_host.known_hosts.split()[0]
    live = key_part(sshd_host.known_hosts)
    # Pinned twice (a plain line and a rotation key), revoked for every host with '*'.
    text = (f"{sshd_host.known_hosts}\n{host_id} {other_key()}\n"
            f"@revoked * {live}\n")
    with pytest.raises(HostKeyError, match="REVOKED"):
        connect(sshd_host, text)
    # Only the revoked key pinned: refused before connecting, and it says why.
    with pytest.raises(HostKeyError, match="every key pinned for it is revoked"):
        connect(sshd_host, f"{sshd_host.known_hosts}\n@revoked {host_id} {live}\n")


@pytest.mark.lab
def test_a_key_nobody_pinned_is_a_changed_key(sshd_host: SshHost) -> None:
    host_id = sshd_host.known_hosts.split()[0]
    with pytest.raises(HostKeyError, match="CHANGED"):
        connect(sshd_host, f"{host_id} {other_key()}\n")


@pytest.mark.lab
def test_hashed_names_and_wildcards_pin_a_host(sshd_host: SshHost) -> None:
    host_id = sshd_host.known_hosts.split()[0]
    salt = os.urandom(20)
    digest = hmac.new(salt, host_id.encode(), hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    live = key_part(sshd_host.known_hosts)
    connect(sshd_host, f"# pinned by hash\n{hashed} {live}\n")
    connect(sshd_host, f"[127.0.0.*]:{sshd_host.port},!10.0.0.1 {live}\n")
    with pytest.raises(HostKeyError, match="not in FORGE_KNOWN_HOSTS"):
        connect(sshd_host, f"*,!{host_id} {live}\n")


def test_cert_authority_lines_are_a_clear_error_not_a_traceback() -> None:
    text = f"[web1]:2222 {other_key()}\n@cert-authority *.example.com {other_key()}\n"
    with pytest.raises(SecretError, match="line 2: @cert-authority is not supported"):
        KnownHosts.parse(text)


@pytest.mark.parametrize("line", [
    "web1 ssh-ed25519 not-base64!",
    "web1 ssh-ed25519",
    "@unknown web1 ssh-ed25519 AAAA",
])
def test_malformed_lines_name_their_line(line: str) -> None:
    with pytest.raises(SecretError, match="FORGE_KNOWN_HOSTS line 2"):
        KnownHosts.parse(f"# comment\n{line}\n")
