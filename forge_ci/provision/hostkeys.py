"""SSH key material for provisioning: host keys made before the server exists,
known_hosts lines, and the deploy key's public half and fingerprints.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from forge_ci.errors import SecretError


@dataclass(frozen=True)
class HostKey:
    """An ed25519 host key pair: OpenSSH private key text and the public line."""

    private: str = field(repr=False)
    public: str  # "ssh-ed25519 AAAA..." (no comment)


def generate_host_key() -> HostKey:
    """A fresh ed25519 host key, made on this machine before the server exists."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private=private, public=public)


def known_hosts_line(host: str, port: int, public: str) -> str:
    """``host keytype base64`` as in ~/.ssh/known_hosts (``[host]:port`` off port 22)."""
    parts = public.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {parts[0]} {parts[1]}"


def public_line(key: paramiko.PKey, comment: str = "forge-ci") -> str:
    """The authorized_keys line for ``key``'s public half."""
    return f"{key.get_name()} {key.get_base64()} {comment}"


def md5_fingerprint(public: str) -> str:
    """The MD5 fingerprint Hetzner reports for an SSH key (``aa:bb:...``)."""
    try:
        blob = base64.b64decode(public.split()[1], validate=True)
    except (IndexError, ValueError):
        raise SecretError("the SSH public key is not an OpenSSH key line") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def parse_public(line: str) -> paramiko.PKey:
    """A public key from an OpenSSH line (what a server prints for its host key)."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
