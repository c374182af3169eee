"""The panel providers' SSH side (forge_ci.provision.panel.SshAccount) against a real
sshd: the lab's jailed account (tests/lab/jail.py) set up as a CyberPanel site user
is: password logins allowed, keys read from the user's own ~/.ssh/authorized_keys.

The one-time password is set with chpasswd, as CyberPanel's ChangeLinuxUserPassword
does; forge then logs in with it, installs the deploy key, and the key logs in."""

from __future__ import annotations

import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import leaks
from lab.jail import JAIL_USER, Jail, start_jail
from lab.policy import lab_required
from lab.sshd import generate_ed25519

from forge_ci.errors import SecretError
from forge_ci.provision.errors import BootstrapError
from forge_ci.provision.hostkeys import public_line
from forge_ci.provision.panel import SshAccount
from forge_ci.remote.ssh import parse_private_key

pytestmark = pytest.mark.lab


def _home() -> Path:
    return Path(pwd.getpwnam(JAIL_USER).pw_dir)


def _set_password(value: str) -> None:
    subprocess.run(["chpasswd"], input=f"{JAIL_USER}:{value}\n", text=True, check=True)


@pytest.fixture
def jail() -> Iterator[Jail]:
    with lab_required():
        made = start_jail(extra_config=(
            f"Match User {JAIL_USER}",
            "  PasswordAuthentication yes",
            "  AuthenticationMethods publickey password",
            "  AuthorizedKeysFile .ssh/authorized_keys",
        ))
    shutil.rmtree(_home() / ".ssh", ignore_errors=True)
    try:
        yield made
    finally:
        made.stop()
        shutil.rmtree(_home() / ".ssh", ignore_errors=True)
        subprocess.run(["usermod", "-p", "*", JAIL_USER], check=True)


def account(jail: Jail) -> SshAccount:
    key = parse_private_key(generate_ed25519().private)
    s = jail.sshd
    return SshAccount(s.host, s.port, key, public_line(key), s.known_hosts + "\n", timeout=10)


def test_the_key_is_installed_with_a_one_time_password_and_then_logs_in(jail: Jail) -> None:
    acc = account(jail)
    assert acc.key_logs_in(JAIL_USER) is False
    once = secrets.token_hex(16)
    leaks.register(once)
    _set_password(once)
    acc.install_key(JAIL_USER, once)
    acc.install_key(JAIL_USER, once)  # again: still one line
    assert acc.key_logs_in(JAIL_USER) is True
    lines = (_home() / ".ssh" / "authorized_keys").read_text().splitlines()
    assert lines == [acc.public]


def test_a_wrong_password_says_what_to_do(jail: Jail) -> None:
    _set_password(secrets.token_hex(16))
    with pytest.raises(BootstrapError, match="did not log in") as err:
        account(jail).install_key(JAIL_USER, "not-the-password")
    assert "authorized_keys" in str(err.value)


def test_an_unpinned_host_is_refused(jail: Jail) -> None:
    acc = account(jail)
    acc.known_hosts = f"[127.0.0.1]:{jail.sshd.port} {generate_ed25519().public}\n"
    with pytest.raises(SecretError, match="does not match FORGE_KNOWN_HOSTS"):
        acc.key_logs_in(JAIL_USER)
    acc.known_hosts = "[127.0.0.1]:1 " + generate_ed25519().public + "\n"
    with pytest.raises(SecretError, match="does not list"):
        acc.key_logs_in(JAIL_USER)


def test_link_current_makes_the_link_over_ssh(jail: Jail) -> None:
    acc = account(jail)
    once = secrets.token_hex(16)
    leaks.register(once)
    _set_password(once)
    acc.install_key(JAIL_USER, once)
    site = jail.home / "shop"
    acc.link_current(JAIL_USER, str(site))
    assert (site / "current").is_symlink()
    assert (site / "current" / "web").is_dir()
