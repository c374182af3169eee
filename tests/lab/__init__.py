"""The test lab: real peers (sshd, nginx + PHP-FPM + MariaDB, S3) as plain
processes on 127.0.0.1, started by the fixtures in tests/conftest.py.

Modules: `sshd` (hosts), `mariadb`, `site` (a WordPress serving stack),
`bedrock` (the example site: build, install, hand deploy), `s3` (moto
server), `faultproxy` (a TCP proxy that drops, delays or refuses).
Everything raises `LabError`; `LabUnavailable` means this machine lacks a
binary or root, which the fixtures turn into a failure (never a skip) unless
FORGE_LAB_ALLOW_SKIP=1.
"""

from ._proc import LabError, LabUnavailable, require_binary
from .users import DEPLOY_USER

__all__ = ["DEPLOY_USER", "LabError", "LabUnavailable", "require_binary"]
