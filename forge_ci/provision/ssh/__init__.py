"""``provider: ssh``: an existing Debian or Ubuntu server, brought to forge's stack over SSH."""

from forge_ci.provision.ssh.provider import SshProvider

__all__ = ["SshProvider"]
