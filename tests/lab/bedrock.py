"""Build and install the example Bedrock site (examples/bedrock) in the lab.

`make_site` gives a release tree: the example plus WordPress core in web/wp
(Debian's package stands in for Composer, which cannot reach a registry here).
`install_wordpress` runs WordPress's installer from the PHP CLI as the deploy
user. `hand_deploy` does what a deploy would, by hand, for tests that need a
live site before the code under test runs.
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import string
from collections.abc import Mapping
from pathlib import Path

from . import leaks
from ._proc import LabError, LabUnavailable, lab_root, require_binary, run
from .mariadb import Database
from .site import WordPressSite
from .users import DEPLOY_USER, chown_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bedrock"
WORDPRESS_CORE = Path(os.environ.get("FORGE_LAB_WORDPRESS", "/usr/share/wordpress"))
VERSION_FILE = Path("web/app/themes/forge-example/version.txt")
SALTS = (
    "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY",
    "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT",
)  # fmt: skip

# Never copied: Debian's wp-config.php would shadow Bedrock's web/wp-config.php
# (WordPress checks its own directory first), and .htaccess points into /etc.
_CORE_SKIP = {"wp-config.php", ".htaccess"}
# Local state and build output a working copy of the example may hold.
_EXAMPLE_SKIP = {
    Path(p) for p in (".env", ".forge", "vendor", "node_modules", "web/wp", "web/app/uploads")
}
_INSTALLER = Path(__file__).with_name("wp_install.php")


def release_line(version: str) -> str:
    """The text the example theme prints for `version` (what health checks look for)."""
    return f"release {version}"


def make_site(dst: Path, version: str, *, link_core: bool = True) -> Path:
    """Copy the example to `dst`, add WordPress core in web/wp, label it `version`.

    Core files are hard links into a per-run copy of core (copying 2,800 files
    per release is slow on some disks); tests must replace core files, never
    edit them in place. `link_core=False` copies them instead.
    """
    shutil.copytree(EXAMPLE, dst, ignore=_ignore_example, dirs_exist_ok=True)
    copy = _link_or_copy if link_core else shutil.copy2
    shutil.copytree(_core(), dst / "web" / "wp", copy_function=copy)
    (dst / VERSION_FILE).write_text(version + "\n")
    return dst


@functools.cache
def _core() -> Path:
    """A self-contained copy of WordPress core, made once per test run.

    Debian links parts of core into /usr/share/javascript and /etc: the copy
    holds the real files, as a Composer build would.
    """
    if not (WORDPRESS_CORE / "wp-settings.php").is_file():
        raise LabUnavailable(
            f"WordPress core not found at {WORDPRESS_CORE} (Debian package `wordpress`, "
            "or set FORGE_LAB_WORDPRESS)"
        )
    cache = lab_root() / "wordpress"
    atexit.register(shutil.rmtree, cache.parent, ignore_errors=True)
    shutil.copytree(
        WORDPRESS_CORE,
        cache,
        symlinks=False,
        ignore_dangling_symlinks=True,
        ignore=_ignore_core,
    )
    return cache


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def _ignore_example(directory: str, names: list[str]) -> list[str]:
    here = Path(directory).relative_to(EXAMPLE)
    return [name for name in names if here / name in _EXAMPLE_SKIP]


def _ignore_core(directory: str, names: list[str]) -> list[str]:
    return (
        [name for name in names if name in _CORE_SKIP] if Path(directory) == WORDPRESS_CORE else []
    )


def write_env(path: Path, values: Mapping[str, str], owner: str = DEPLOY_USER) -> Path:
    """Write a .env (mode 0600, owned by `owner`), adding random salts left unset.

    Values are double-quoted with \\, ", $ and newlines escaped, which both the
    example's reader and phpdotenv understand.
    """
    merged = {name: _salt() for name in SALTS}
    merged.update(values)
    text = "".join(f"{name}={_quote(value)}\n" for name, value in merged.items())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    shutil.chown(path, owner, owner)
    return leaks.holds_secrets(path)


def _salt() -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*()-_[]{}<>~+=,.;:/?|"
    return "".join(secrets.choice(alphabet) for _ in range(64))


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n"})


def _quote(value: str) -> str:
    return '"' + value.translate(_ESCAPES) + '"'


def install_wordpress(
    root: Path,
    url: str,
    *,
    db: Database | None = None,
    title: str = "Forge example",
    admin_user: str = "admin",
    admin_password: str = "forge-lab-admin",
    admin_email: str = "admin@example.invalid",
    user: str = DEPLOY_USER,
) -> None:
    """Install WordPress for the project at `root` (a release or <path>/current).

    Runs as `user` with the PHP CLI. Database settings come from `root`/.env
    unless `db` is given (the real environment wins over .env). Idempotent: an
    installed site only gets its theme, URLs and permalinks set again.
    """
    if not (root / "web" / "wp" / "wp-load.php").is_file():
        raise LabError(f"{root} has no web/wp/wp-load.php: build it with make_site first")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "FORGE_INSTALL_ROOT": str(root),
        "FORGE_INSTALL_URL": url.rstrip("/"),
        "FORGE_INSTALL_TITLE": title,
        "FORGE_INSTALL_ADMIN": admin_user,
        "FORGE_INSTALL_PASSWORD": admin_password,
        "FORGE_INSTALL_EMAIL": admin_email,
    }
    if db is not None:
        env |= {
            "DB_NAME": db.name,
            "DB_USER": db.user,
            "DB_PASSWORD": db.password,
            "DB_HOST": db.host_port,
        }
    php = require_binary("php", "package php8.2-cli")
    runuser = require_binary("runuser", "package util-linux")
    # The installer is read from stdin: the lab's own directory may not be
    # readable by the deploy user.
    run(
        [runuser, "-u", user, "--", php, "-d", "display_errors=stderr"],
        what=f"WordPress install in {root}",
        input=_INSTALLER.read_text(),
        env=env,
        cwd=root,
        timeout=120,
    )


def hand_deploy(
    site: WordPressSite, release_id: str, version: str, *, install: bool = True
) -> Path:
    """Put a release live the way a deploy would, without forge.

    releases/<id> from make_site, shared/.env (0600) and shared uploads linked
    in, `current` swapped by rename, everything owned by the deploy user.
    """
    release = make_site(site.path / "releases" / release_id, version)
    shared = site.path / "shared"
    (shared / "web" / "app" / "uploads").mkdir(parents=True, exist_ok=True)
    if not (shared / ".env").exists():
        write_env(shared / ".env", site.dotenv(), owner=site.user)
    (release / ".env").symlink_to("../../shared/.env")
    (release / "web" / "app" / "uploads").symlink_to("../../../../shared/web/app/uploads")
    chown_tree(site.path, site.user)
    switch_link(site.path / "current", f"releases/{release_id}")
    if install:
        install_wordpress(site.path / "current", site.url, user=site.user)
    return release


def switch_link(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: new link beside it, then rename over."""
    temp = link.with_name(f".{link.name}.tmp")
    temp.unlink(missing_ok=True)
    temp.symlink_to(target)
    os.chown(temp, *_ids(link.parent), follow_symlinks=False)
    temp.rename(link)


def _ids(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid
