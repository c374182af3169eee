"""cloud-init user data (``#cloud-config``) that turns Ubuntu 24.04 into a Bedrock host.

Contract of :func:`user_data`:

- returns a ``#cloud-config`` document under :data:`MAX_BYTES` (Hetzner's limit)
  that ``cloud-init schema`` accepts;
- holds no password and no secret of the site: user data stays readable from the
  server's metadata service. The one sensitive item is the first-boot host key,
  which forge replaces over the first verified SSH connection
  (:data:`~forge_ci.provision.stack.ROTATE_PATH`);
- installs nginx (docroot ``<path>/current/web``, ``$realpath_root``), PHP-FPM
  with a pool running as the deploy user, MariaDB with the site's database,
  a swap file and unattended upgrades; creates the deploy user (key login, sudo
  only for reloads and the host key rotation) and ``<path>/{releases,shared,.forge}``;
  hardens sshd (keys only, no root, only the deploy user);
- when the site has HTTPS (:attr:`Site.tls`), writes forge-https and its settings
  (the script gzip+base64, ``encoding: gz+b64``, to stay small); ``forge-setup``
  runs it once nginx is up, and its exit 3 (pending: DNS not pointing here yet)
  does not fail the boot.
"""

from __future__ import annotations

import base64
import gzip
from typing import Any

import yaml

from forge_ci.errors import ProvisionError
from forge_ci.provision import stack
from forge_ci.provision.hostkeys import HostKey
from forge_ci.provision.site import Site

MAX_BYTES = 32 * 1024


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Files and keys as literal blocks: readable in the console, byte-exact on the server.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


# Files written compressed: long, and nobody needs to read them in the console.
_COMPRESSED = frozenset({stack.HTTPS_PATH})


def _file(path: str, content: str, mode: str = "0644", *, defer: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "content": content, "owner": "root:root",
                             "permissions": mode}
    if path in _COMPRESSED:
        packed = gzip.compress(content.encode(), compresslevel=9, mtime=0)
        entry["content"] = base64.b64encode(packed).decode()
        entry["encoding"] = "gz+b64"
    if defer:
        # Written after the packages are installed, so no package overwrites it.
        entry["defer"] = True
    return entry


def file_content(entry: dict[str, Any]) -> str:
    """A ``write_files`` entry's text as it lands on the server (decoded)."""
    if entry.get("encoding") == "gz+b64":
        return gzip.decompress(base64.b64decode(entry["content"])).decode()
    return str(entry["content"])


def config(site: Site, deploy_key: str, host_key: HostKey) -> dict[str, Any]:
    """The cloud-config as data (tests read it; :func:`user_data` serialises it)."""
    files = [
        _file(stack.FIRST_BOOT_MARKER, "The SSH host key still is the one from user data.\n",
              "0600"),
        _file(stack.ROTATE_PATH, stack.rotate_script(), "0755"),
    ] + [_file(f.path, f.content, f.mode, defer=f.after_packages) for f in stack.files(site)]
    doc: dict[str, Any] = {
        "disable_root": True,
        "ssh_pwauth": False,
        # Drop whatever keys the image has; install the one whose public half forge pinned.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {"ed25519_private": host_key.private, "ed25519_public": host_key.public},
        "users": [{
            "name": site.deploy_user,
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [deploy_key],
            "sudo": stack.sudo_rule(site),
        }],
        "package_update": True,
        "package_upgrade": True,
        "packages": stack.packages(site),
        "write_files": files,
        "runcmd": [[stack.SETUP_PATH]],
    }
    if site.swap_mb:
        size = site.swap_mb * 1024 * 1024
        doc["swap"] = {"filename": "/swapfile", "size": size, "maxsize": size}
    return doc


def user_data(site: Site, deploy_key: str, host_key: HostKey) -> str:
    """The ``#cloud-config`` text; raises ProvisionError if it would exceed 32 KiB."""
    body = yaml.dump(config(site, deploy_key, host_key), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, width=1000, allow_unicode=False)
    text = "#cloud-config\n" + body
    size = len(text.encode())
    if size >= MAX_BYTES:
        raise ProvisionError(f"the cloud-init user data is {size} bytes; Hetzner takes "
                             f"less than {MAX_BYTES}", hint="report this as a bug")
    return text
