"""The first verified SSH connection to a new server: wait, then retire the first-boot key.

Contract of :func:`bootstrap`:

1. Connects as the deploy user trusting exactly ``pinned`` (the first-boot key
   forge put into user data, or FORGE_KNOWN_HOSTS for a server made earlier).
   While the server boots, refusals and timeouts are retried until the policy's
   ``boot_timeout``; a host key that does not match is never retried.
2. Waits for ``cloud-init status --wait``: exit 0 is done, 2 is "degraded"
   (reported as a warning), anything else fails with where to look.
3. Runs ``sudo -n forge-rotate-host-keys`` over that same verified connection:
   the server makes a fresh host key, reloads sshd and prints the public key.
   (The script does nothing but print the key once the first-boot key is gone.)
4. Connects again trusting only the new key, so the returned ``known_hosts``
   line is proven to be what the server presents now.
5. Reads forge-https's status line (``/var/lib/forge-https/status``) over the
   verified connection. On a later run (key already rotated) a ``pending``
   certificate is retried once (``sudo -n forge-https``). ``https_advice`` turns
   the line into what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from forge_ci.errors import ConnectError, HostKeyError
from forge_ci.provision.errors import BootstrapError, ProvisionTimeout
from forge_ci.provision.hostkeys import known_hosts_line, parse_public
from forge_ci.provision.policy import Deadline, ProvisionPolicy
from forge_ci.provision.stack import HTTPS_PATH, HTTPS_PENDING, HTTPS_STATUS_PATH
from forge_ci.remote.base import Host, sh
from forge_ci.remote.ssh import SshHost

ROTATE_COMMAND = "sudo -n forge-rotate-host-keys"
CLOUD_INIT_COMMAND = "cloud-init status --wait"
# Reconnecting after the rotation only waits for sshd to reload: seconds, not minutes.
_VERIFY_SECONDS = 120.0

Opener = Callable[[str], Host]  # known_hosts text -> connected host


@dataclass(frozen=True)
class Bootstrapped:
    known_hosts: str  # the line for the key the server presents now
    rotated: bool  # False: the key was rotated on an earlier run
    cloud_init: str  # "done" or "degraded"
    https: str | None = None  # forge-https's status line; None: no status on the server


def ssh_opener(address: str, port: int, user: str, key: paramiko.PKey) -> Opener:
    def open_host(known_hosts: str) -> Host:
        return SshHost(address, port, user, key=key, known_hosts=known_hosts, timeout=15.0)

    return open_host


def bootstrap(open_host: Opener, address: str, port: int, pinned: str, policy: ProvisionPolicy,
              log: Callable[[str], None]) -> Bootstrapped:
    host = connect_when_up(open_host, pinned, policy.deadline(policy.boot_timeout), log,
                           retry_key_mismatch=False)
    try:
        state = wait_cloud_init(host, policy)
        new_public = rotate(host)
        rotated = not _same_key(pinned, new_public)
        https = https_status(host, retry_pending=not rotated)
    finally:
        host.close()
    line = known_hosts_line(address, port, new_public)
    # Prove it: a fresh connection that trusts nothing but the new key.
    verify = connect_when_up(open_host, line, policy.deadline(_VERIFY_SECONDS), log,
                             retry_key_mismatch=True)
    verify.close()
    return Bootstrapped(known_hosts=line, rotated=rotated, cloud_init=state, https=https)


def read_https_status(host: Host, status_path: str = HTTPS_STATUS_PATH) -> str | None:
    """forge-https's status line (``ok|pending|off|failed TIME NAMES``), or None."""
    data = host.read(status_path)
    if data is None:
        return None
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else None


def https_status(host: Host, *, retry_pending: bool, sudo: str = "sudo -n",
                 script: str = HTTPS_PATH, status_path: str = HTTPS_STATUS_PATH) -> str | None:
    """The status line; a ``pending`` one is retried first when ``retry_pending``
    (the DNS may point here by now). A failing retry keeps the old line."""
    line = read_https_status(host, status_path)
    if retry_pending and line is not None and line.split()[0] == "pending":
        result = host.run(f"{sudo} {sh(script)}", check=False, timeout=600)
        if result.status not in (0, HTTPS_PENDING):
            raise BootstrapError(
                f"forge-https failed on {host.name} (exit {result.status})"
                + (f": {result.tail()}" if result.stderr.strip() else ""),
                hint="the site still serves HTTP; fix the cause and run provision again")
        line = read_https_status(host, status_path)
    return line


def https_advice(line: str | None, address: str) -> str | None:
    """What to fix, for a status line that is not ``ok`` or ``off``; None otherwise."""
    if not line:
        return None
    state, _, rest = line.partition(" ")
    names = " ".join(rest.split()[1:]) or "the site's names"
    if state == "pending":
        return (f"HTTPS is pending: no certificate for {names} yet, the CA could not reach "
                f"the site. Point the DNS A/AAAA records of {names} at {address} and allow "
                "port 80; the server retries twice a day, or run provision again. The site "
                "serves HTTP until then.")
    if state == "failed":
        return (f"HTTPS failed for {names}: see /var/lib/forge-https/lego/last.log on the "
                "server (the current certificate, if any, is still served)")
    return None


def connect_when_up(open_host: Opener, known_hosts: str, deadline: Deadline,
                    log: Callable[[str], None], *, retry_key_mismatch: bool) -> Host:
    """Connect, retrying while the server is not up yet; see the module contract."""
    last = ""
    while True:
        try:
            return open_host(known_hosts)
        except HostKeyError as e:
            # Only after the rotation: sshd may still serve the old key for a moment.
            if not retry_key_mismatch or deadline.passed:
                raise
            reason = e.message
        except ConnectError as e:
            if deadline.passed:
                raise ProvisionTimeout(
                    f"the server did not accept SSH in time: {e.message}",
                    hint="is this machine's address inside provision.ssh_sources (the firewall "
                         "lets only those reach SSH)? Otherwise look at the server's console",
                ) from None
            reason = e.message
        if reason != last:
            log(f"waiting for SSH: {reason}")
            last = reason
        deadline.wait()


def wait_cloud_init(host: Host, policy: ProvisionPolicy) -> str:
    """``done`` or ``degraded``; raises BootstrapError when cloud-init failed."""
    result = host.run(CLOUD_INIT_COMMAND, check=False, timeout=policy.boot_timeout)
    if result.status == 0:
        return "done"
    if result.status == 2:
        return "degraded"
    detail = (result.tail() or result.text.strip()[-500:]).strip()
    raise BootstrapError(
        f"cloud-init failed on {host.name} (exit {result.status})"
        + (f": {detail}" if detail else ""),
        hint="read /var/log/cloud-init-output.log on the server; `forge-ci destroy` and "
             "provision again once the cause is fixed",
    )


def rotate(host: Host) -> str:
    """Run the rotation script; return the host's current public key line."""
    result = host.run(ROTATE_COMMAND, check=False, timeout=120)
    if result.status != 0:
        raise BootstrapError(
            f"replacing the first-boot host key failed on {host.name} (exit {result.status})"
            + (f": {result.tail()}" if result.stderr.strip() else ""),
            hint="the server still presents the first-boot key (its known-hosts line stays "
                 "valid); run provision again to retry",
        )
    lines = [ln for ln in result.text.splitlines() if ln.startswith("ssh-ed25519 ")]
    if not lines:
        raise BootstrapError(f"the host key rotation on {host.name} printed no ed25519 key")
    try:
        parse_public(lines[-1])
    except (ValueError, paramiko.SSHException):
        raise BootstrapError(f"the host key printed by {host.name} is not valid") from None
    return " ".join(lines[-1].split()[:2])


def _same_key(known_hosts: str, public: str) -> bool:
    blob = public.split()[1]
    return any(line.split()[2:3] == [blob] for line in known_hosts.splitlines())
