"""A lab "cPanel account": a user whose shell sees only a chosen set of tools.

cPanel's jailshell (and CloudLinux's CageFS) give an account a shell over a
trimmed view of the server: which binaries are there is the host's choice, and
``flock`` is often missing. The lab builds the same situation with a real sshd
(:mod:`lab.sshd`): the user ``forgejail`` logs in with ``/bin/sh`` and sshd's
``SetEnv PATH=<dir>`` (applied after sshd's own default PATH) gives every
session a PATH of one directory holding symlinks to the chosen tools. ``rbash``
would also forbid ``cd`` and paths with ``/``, which a real jailshell allows, so
it is not used.

The jail restricts what is *found on PATH*, as a jailshell does; it is not a
security boundary (an absolute path still works), which the tests do not need.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._proc import LabUnavailable, lab_root
from .sshd import KeyPair, SshHost, start_sshd
from .users import ensure_deploy_user, make_owned_dir

JAIL_USER = "forgejail"

# What a cPanel jailshell offers a deploy (coreutils, findutils, GNU tar, sh), flock aside.
TOOLS = ("sh", "cat", "cp", "ln", "ls", "mkdir", "mv", "readlink", "rm", "rmdir", "sleep",
         "tar", "xargs", "nohup", "touch", "chmod", "find", "env", "dirname", "basename",
         "stat", "du", "df", "head", "tail", "sort", "wc", "sed", "grep", "gzip", "id", "uname",
         "date", "mktemp", "sync", "true", "false", "test", "[", "printf", "tr", "cut",
         "sha256sum", "realpath", "flock", "php", "curl")


@dataclass
class Jail:
    sshd: SshHost
    bin: Path  # the only directory on the session's PATH
    home: Path  # a directory the jailed user owns, for the site

    def remove_tool(self, name: str) -> None:
        (self.bin / name).unlink(missing_ok=True)

    def stop(self) -> None:
        self.sshd.close()


def start_jail(key: KeyPair | None = None, *, without: Iterable[str] = (),
               extra_config: tuple[str, ...] = ()) -> Jail:
    """An sshd for :data:`JAIL_USER` whose PATH holds :data:`TOOLS` minus ``without``."""
    ensure_deploy_user(JAIL_USER)
    root = lab_root()
    bindir = root / "bin"
    bindir.mkdir()
    bindir.chmod(0o755)
    skip = set(without)
    for name in TOOLS:
        found = shutil.which(name)
        if name in skip or found is None:
            if name in ("sh", "tar", "cp", "xargs", "mv", "ln", "readlink", "cat") \
                    and name not in skip:
                raise LabUnavailable(f"the jail needs {name}, which this machine lacks")
            continue
        (bindir / name).symlink_to(found)
    home = make_owned_dir(root / "home", JAIL_USER)
    sshd = start_sshd(key, user=JAIL_USER,
                      extra_config=(f"SetEnv PATH={bindir}", *extra_config))
    return Jail(sshd, bindir, home)
