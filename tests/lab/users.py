"""The deploy user every lab host logs in as and every site runs as."""

from __future__ import annotations

import fcntl
import os
import pwd
from pathlib import Path

from ._proc import LabError, require_binary, require_root, run

DEPLOY_USER = "forgedeploy"
_LOCK = Path("/tmp/forge-lab-useradd.lock")


def ensure_deploy_user(name: str = DEPLOY_USER) -> pwd.struct_passwd:
    """Create the deploy user if missing and make it able to log in by key.

    useradd leaves the account locked ('!' in shadow) and sshd without PAM
    refuses locked accounts even for key auth, hence `usermod -p '*'`.
    A file lock keeps parallel pytest runs from racing on useradd.
    """
    require_root()
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _exists(name):
            run([require_binary("useradd"), "-m", "-s", "/bin/bash", name], what=f"useradd {name}")
        if _locked(name):
            run([require_binary("usermod"), "-p", "*", name], what=f"unlock {name}")
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise LabError(f"user {name} still missing after useradd") from exc


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _locked(name: str) -> bool:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1].startswith("!")
    return False


def chown_tree(path: Path, name: str = DEPLOY_USER) -> None:
    """Give `path` and everything under it to `name` (symlinks themselves, not targets)."""
    entry = pwd.getpwnam(name)
    for root, dirs, files in os.walk(path):
        os.lchown(root, entry.pw_uid, entry.pw_gid)
        for item in (*dirs, *files):
            os.lchown(os.path.join(root, item), entry.pw_uid, entry.pw_gid)


def make_owned_dir(path: Path, name: str = DEPLOY_USER, mode: int = 0o755) -> Path:
    """mkdir -p, then hand the leaf to `name` with `mode`."""
    entry = pwd.getpwnam(name)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path
