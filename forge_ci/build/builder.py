"""Build once: copy the site, run composer and the build commands, write the artifact.

An artifact is a directory::

    <out>/tree/           the files a release will contain
    <out>/manifest.json   per-file sha256 and mode (see manifest.py)
    <out>/artifact.json   digest, source commit, forge version

The server needs nothing but sh, tar and coreutils: no composer, git or GitHub.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from forge_ci import __version__
from forge_ci.build.manifest import Manifest, scan
from forge_ci.config.models import BuildConfig
from forge_ci.errors import ArtifactError, BuildError

# Never part of a release whatever the config says: VCS data and forge's own state.
ALWAYS_EXCLUDE = (".git", ".forge", ".env")
COMPOSER = ("composer", "install", "--no-dev", "--optimize-autoloader", "--no-interaction",
            "--no-progress", "--prefer-dist")


@dataclass(frozen=True)
class Artifact:
    root: Path
    manifest: Manifest

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def digest(self) -> str:
        return self.manifest.digest


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """gitignore-like: a pattern without '/' matches any path component,
    one with '/' matches the path from the site root (or a parent of it)."""
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.strip("/")
        if "/" in pat:
            if any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
                return True
        elif any(fnmatch.fnmatchcase(part, pat) for part in parts):
            return True
    return False


def copy_tree(src: Path, dst: Path, patterns: tuple[str, ...]) -> None:
    """Copy files, dirs and symlinks (as links) from src to dst, skipping excluded paths."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir
        target_dir = dst / rel_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copymode(dirpath, target_dir)
        keep = []
        for name in dirnames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if excluded(rel, patterns):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                os.symlink(os.readlink(os.path.join(dirpath, name)), target_dir / name)
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if excluded(rel, patterns):
                continue
            s = os.path.join(dirpath, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), target_dir / name)
            else:
                shutil.copy2(s, target_dir / name)


def _run(cmd: list[str] | str, cwd: Path, environ: Mapping[str, str], what: str,
         log: Callable[[str], None], untrusted: Callable[[Sequence[str]], None] | None) -> None:
    log(f"$ {cmd if isinstance(cmd, str) else ' '.join(cmd)}")
    try:
        p = subprocess.run(cmd, cwd=cwd, env=dict(environ), shell=isinstance(cmd, str),
                           capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{what}: command not found",
                         hint="install it on the runner before forge-ci build") from None
    output = (p.stdout + p.stderr).splitlines()[-40:]
    if untrusted is not None:
        untrusted(output)  # the build's own words: shown as text, never as commands
    else:
        for line in output:
            log(f"  {line}")
    if p.returncode != 0:
        raise BuildError(f"{what} failed with exit {p.returncode}",
                         hint="the output above shows why; fix the build and push again")


def build(source: Path, config: BuildConfig, out: Path, *, environ: Mapping[str, str],
          extra_exclude: Iterable[str] = (), log: Callable[[str], None] = print,
          untrusted: Callable[[Sequence[str]], None] | None = None) -> Artifact:
    """Build ``source`` into the artifact directory ``out`` (replaced if present).

    ``untrusted`` shows the output of composer and the build commands
    (:meth:`forge_ci.gha.Runner.untrusted`); without it each line goes to ``log``.
    """
    patterns = (*ALWAYS_EXCLUDE, *config.exclude, *extra_exclude)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tree = tmp / "tree"
    copy_tree(source, tree, patterns)
    if config.composer:
        if not (tree / "composer.json").exists():
            raise BuildError("build.composer is true but there is no composer.json",
                             hint="set build.composer: false or add composer.json")
        _run(list(COMPOSER), tree, environ, "composer install", log, untrusted)
    for i, command in enumerate(config.commands):
        _run(command, tree, environ, f"build.commands[{i}]", log, untrusted)
    _prune_excluded(tree, patterns)  # build commands may create node_modules etc.
    manifest = scan(tree)
    (tmp / "manifest.json").write_bytes(manifest.to_bytes())
    info = {
        "digest": manifest.digest,
        "files": len(manifest.entries),
        "bytes": manifest.total_size,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": environ.get("GITHUB_SHA", ""),
        "forge": __version__,
    }
    (tmp / "artifact.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Artifact(out, manifest)


def _prune_excluded(tree: Path, patterns: tuple[str, ...]) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = os.path.relpath(dirpath, tree)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in list(dirnames) + filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if excluded(rel, patterns):
                full = Path(dirpath) / name
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full)
                    dirnames.remove(name)
                else:
                    full.unlink()


def open_artifact(root: Path) -> Artifact:
    """Load a built artifact and check its tree still matches the manifest's file list."""
    try:
        manifest = Manifest.from_bytes((root / "manifest.json").read_bytes(),
                                       source=str(root / "manifest.json"))
    except FileNotFoundError:
        raise ArtifactError(f"{root} is not a forge artifact (no manifest.json)",
                            hint="create one with forge-ci build --out DIR") from None
    tree = str(root / "tree")
    for path, entry in manifest.entries.items():
        if entry.kind != "file":
            continue
        try:
            st = os.lstat(f"{tree}/{path}")  # one call per file: redeploys start here
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            raise ArtifactError(f"artifact {root}: {path} is missing or changed since the build",
                                hint="rebuild the artifact")
    return Artifact(root, manifest)
