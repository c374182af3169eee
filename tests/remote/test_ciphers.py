"""The cipher forge streams releases with: AES-GCM where the server offers it (one
AEAD pass per packet), any other cipher paramiko accepts where it does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.sshd import KeyPair, SshHost, start_sshd

from forge_ci.remote.ssh import SshHost as ForgeSsh
from forge_ci.remote.ssh import connector

pytestmark = pytest.mark.lab


def _open(host: SshHost) -> ForgeSsh:
    return connector(host.private_key, host.known_hosts + "\n", timeout=10)(
        host.host, host.port, host.user)


def _cipher(opened: ForgeSsh) -> str:
    return str(opened._transport.local_cipher)


def test_aes_gcm_is_chosen_when_the_server_offers_it(sshd_host: SshHost) -> None:
    opened = _open(sshd_host)
    try:
        assert _cipher(opened) == "aes128-gcm@openssh.com"
        assert opened.run("head -c 3000000 /dev/zero | wc -c").stdout.strip() == b"3000000"
    finally:
        opened.close()


@pytest.fixture
def ctr_only(ssh_client_key: KeyPair) -> Iterator[SshHost]:
    host = start_sshd(ssh_client_key, extra_config=("Ciphers aes256-ctr",))
    yield host
    host.close()


def test_a_server_without_gcm_still_connects(ctr_only: SshHost) -> None:
    opened = _open(ctr_only)
    try:
        assert _cipher(opened) == "aes256-ctr"
        assert opened.run("echo ok").stdout == b"ok\n"
    finally:
        opened.close()
