"""What a build ships (git's file list plus the build's own outputs) and what its
commands can see (no secret of forge's)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from forge_ci.build.builder import build, build_environ
from forge_ci.cli import main
from forge_ci.config.models import BuildConfig
from forge_ci.errors import ArtifactError, BuildError

SECRETS = {
    "FORGE_SSH_KEY": "ssh-key-secret-value",
    "FORGE_KNOWN_HOSTS": "known-hosts-secret-value",
    "FORGE_BACKUP_IDENTITY": "AGE-SECRET-KEY-secret-value",
    "FORGE_BACKUP_SIGNING_KEY": "signing-secret-value",
    "FORGE_ENV": "forge-env-secret-value",
    "HCLOUD_TOKEN": "hcloud-secret-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_ACCESS_KEY_ID": "aws-key-id-value",
    "CYBERPANEL_PASSWORD": "cyberpanel-secret-value",
    "CPANEL_TOKEN": "cpanel-secret-value",
    "GITHUB_TOKEN": "github-token-value",
    "DB_PASSWORD": "db-password-value",  # referenced by forge.yml as ${DB_PASSWORD}
    "SOME_OTHER": "db-password-value",  # the same value under another name
}

FORGE_YML = """\
version: 1
project: t
build:
  commands: ["mkdir -p vendor && echo '<?php' > vendor/autoload.php", "env > build-env.txt"]
  env: [NPM_TOKEN]
environments:
  local:
    path: ../target
  production:
    path: /srv/www/t
    hosts: [{host: 203.0.113.10}]
    dotenv: {DB_PASSWORD: "${DB_PASSWORD}"}
    backup: {store: "file:backups", paths: [shared/web/app/uploads]}
"""


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=root, check=True, capture_output=True)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write(src, {
        "forge.yml": FORGE_YML,
        ".gitignore": "/vendor/\n/.env.local\n/web/app/uploads/\n/backups/\n",
        "web/index.php": "<?php echo 'ok';",
        "composer.json": "{}",
    })
    git(src, "init", "-q")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "site")
    # What a laptop has lying around: none of it may ship.
    write(src, {
        ".env.local": "DB_PASSWORD=laptop",
        "web/app/uploads/2026/photo.jpg": "jpeg",
        "backups/snapshots/x": "a backup",
        "vendor/stale.php": "<?php // from an old local composer run",
        "notes.txt": "untracked but not ignored",
    })
    return src


def forge(src: Path, *args: str, env: dict[str, str] | None = None) -> int:
    base = {"PATH": os.environ["PATH"], "HOME": str(src.parent), "NPM_TOKEN": "npm-token-value"}
    return main([*args, "--config", str(src / "forge.yml")], env={**base, **(env or {})})


def shipped(out: Path) -> set[str]:
    return set(json.loads((out / "manifest.json").read_text())["files"])


def test_build_ships_what_git_lists_plus_its_own_outputs(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = site.parent / "art"
    assert forge(site, "build", "--out", str(out), "--json") == 0
    files = shipped(out)
    assert {"web/index.php", "composer.json", ".gitignore", "forge.yml", "notes.txt"} <= files
    assert "vendor/autoload.php" in files  # made by the build, though .gitignore lists it
    assert "vendor/stale.php" not in files  # ignored and not the build's
    assert ".env.local" not in files
    assert not any(f.startswith(("backups", "web/app/uploads")) for f in files)
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["selection"].startswith("git ls-files")


def test_a_file_store_inside_the_site_never_ships_even_when_git_does_not_ignore_it(
    site: Path,
) -> None:
    (site / ".gitignore").write_text("/vendor/\n/.env.local\n")
    out = site.parent / "art"
    assert forge(site, "build", "--out", str(out)) == 0
    assert not any(f.startswith("backups") for f in shipped(out))
    assert "web/app/uploads/2026/photo.jpg" in shipped(out)  # not ignored: it ships


def test_build_commands_see_no_secret_and_what_build_env_names(site: Path) -> None:
    out = site.parent / "art"
    assert forge(site, "build", "--out", str(out), env=SECRETS) == 0
    dump = (out / "tree" / "build-env.txt").read_text()
    seen = dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)
    for name, value in SECRETS.items():
        assert name not in seen, name
        assert value not in dump, name
    assert seen["NPM_TOKEN"] == "npm-token-value"
    assert seen["PATH"] == os.environ["PATH"]


def test_build_needs_no_environments_secret(site: Path) -> None:
    # DB_PASSWORD is unset: production's dotenv cannot be filled, and a build does not care.
    assert forge(site, "build", "--out", str(site.parent / "art")) == 0


def test_build_environ_keeps_locale_and_ci_context_only() -> None:
    environ = {"LC_ALL": "C.UTF-8", "GITHUB_SHA": "abc", "GITHUB_OUTPUT": "/tmp/o",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t", "HOME": "/home/x", "CI": "true",
               "LANG": "hidden-value"}
    env = build_environ(environ, (), secrets=("hidden-value",))
    assert env == {"LC_ALL": "C.UTF-8", "GITHUB_SHA": "abc", "HOME": "/home/x", "CI": "true"}


def test_outside_git_every_file_is_copied_with_a_note(tmp_path: Path) -> None:
    write(tmp_path / "src", {"web/index.php": "x", ".env.local": "y"})
    lines: list[str] = []
    build(tmp_path / "src", BuildConfig(), tmp_path / "art", environ={}, log=lines.append)
    assert {"web/index.php", ".env.local"} <= shipped(tmp_path / "art")
    assert any("not a git checkout" in line for line in lines)


def test_a_large_artifact_is_warned_about(tmp_path: Path) -> None:
    write(tmp_path / "src", {"web/big.bin": "x" * 4096})
    warnings: list[str] = []
    build(tmp_path / "src", BuildConfig(), tmp_path / "art", environ={}, log=lambda _: None,
          warn=warnings.append, large=1024)
    assert len(warnings) == 1 and "4.0 KiB" in warnings[0]


def test_chained_symlinks_that_climb_out_are_refused_with_their_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, {"web/index.php": "x"})
    for d in ("x1", "x2", "x3"):
        (src / d).mkdir()
    os.symlink("..", src / "x1/l")  # the release root: inside
    os.symlink("../x1/l/..", src / "x2/l")  # the root's parent: outside
    with pytest.raises(ArtifactError, match="x2/l"):
        build(src, BuildConfig(), tmp_path / "art", environ={}, log=lambda _: None)
    (src / "x2/l").unlink()
    os.symlink("../x1/l/web", src / "x2/l")  # through the chain, still inside
    os.symlink("../x3/loop", src / "x3/loop")
    with pytest.raises(ArtifactError, match="x3/loop"):
        build(src, BuildConfig(), tmp_path / "art", environ={}, log=lambda _: None)
    (src / "x3/loop").unlink()
    build(src, BuildConfig(), tmp_path / "art", environ={}, log=lambda _: None)


def test_build_says_sizes_for_people(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert forge(site, "build", "--out", str(site.parent / "art")) == 0
    out = capsys.readouterr().out
    assert " B, digest" in out or "iB, digest" in out
    assert "bytes" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the checkout away")
def test_a_checkout_git_refuses_to_read_stops_the_build(site: Path) -> None:
    # A checkout owned by someone else: git refuses it ("dubious ownership"). Copying
    # every file instead would ship .env.local and the backups.
    for dirpath, _, filenames in os.walk(site):
        for name in [".", *filenames]:
            os.chown(os.path.join(dirpath, name), 12345, 12345, follow_symlinks=False)
    environ = {"PATH": os.environ["PATH"], "HOME": str(site.parent)}
    with pytest.raises(BuildError, match="git ls-files failed"):
        build(site, BuildConfig(), site.parent / "art", environ=environ, log=lambda _: None)
