"""Build once: copy the site, run composer and the build commands, write the artifact.

An artifact is a directory::

    <out>/tree/           the files a release will contain
    <out>/manifest.json   per-file sha256 and mode (see manifest.py)
    <out>/artifact.json   digest, source commit, forge version, how files were chosen

What is copied: in a git checkout, what ``git ls-files --cached --others
--exclude-standard`` lists (tracked files and untracked ones .gitignore does not
ignore); outside git, every file. Then ``build.exclude`` and :data:`ALWAYS_EXCLUDE`
are left out. composer and the build commands run in that copy, so whatever they
create (vendor/, built assets) is part of the release even when .gitignore lists it.
They run with :func:`build_environ`: none of forge's secrets.

The server needs nothing but sh, tar and coreutils: no composer, git or GitHub.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
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
from forge_ci.units import human_size

# Never part of a release whatever the config says: VCS data and forge's own state.
ALWAYS_EXCLUDE = (".git", ".forge", ".env")
COMPOSER = ("composer", "install", "--no-dev", "--optimize-autoloader", "--no-interaction",
            "--no-progress", "--prefer-dist")


# A release of a Bedrock site is tens of MB; past this the artifact most likely holds
# something that is not the site (a backup store, uploads, a disk image).
LARGE_ARTIFACT = 500 * 1024 * 1024

# What a build command sees of the runner's environment: tools' settings and CI
# context, never a credential. Anything else must be named in build.env.
BUILD_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
    "TMPDIR", "TMP", "TEMP", "CI", "NODE_ENV", "COMPOSER_HOME", "COMPOSER_CACHE_DIR",
    "npm_config_cache", "NPM_CONFIG_CACHE", "YARN_CACHE_FOLDER", "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME", "RUNNER_OS", "RUNNER_ARCH", "RUNNER_TEMP", "RUNNER_TOOL_CACHE",
    "GITHUB_ACTIONS", "GITHUB_SHA", "GITHUB_REF", "GITHUB_REF_NAME", "GITHUB_REF_TYPE",
    "GITHUB_HEAD_REF", "GITHUB_BASE_REF", "GITHUB_REPOSITORY", "GITHUB_REPOSITORY_OWNER",
    "GITHUB_RUN_ID", "GITHUB_RUN_NUMBER", "GITHUB_RUN_ATTEMPT", "GITHUB_SERVER_URL",
    "GITHUB_WORKSPACE", "GITHUB_EVENT_NAME", "GITHUB_WORKFLOW", "GITHUB_JOB",
    "GITHUB_ACTOR",
})
_LOCALE = re.compile(r"LC_[A-Z_]+")


def build_environ(environ: Mapping[str, str], names: Iterable[str] = (),
                  secrets: Iterable[str] = ()) -> dict[str, str]:
    """The environment of composer and build commands: :data:`BUILD_ENV_NAMES`, ``LC_*``
    and the ``names`` a site lists in build.env, minus any variable holding one of
    ``secrets`` (the ``${VAR}`` values of forge.yml) unless build.env names it.

    An npm or composer package runs inside the build: it must not see the deploy key,
    the backup keys, cloud tokens or the site's database password.
    """
    wanted = set(names)
    hidden = {v for v in secrets if v}
    out = {}
    for name, value in environ.items():
        safe = (name in BUILD_ENV_NAMES or _LOCALE.fullmatch(name)) and value not in hidden
        if name in wanted or safe:
            out[name] = value
    return out


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
    one with '/' (or starting with '/') matches the path from the site root (or a
    parent of it)."""
    parts = rel.split("/")
    for pat in patterns:
        anchored = pat.startswith("/")  # as in .gitignore: from the site root only
        pat = pat.strip("/")
        if anchored or "/" in pat:
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
          extra_exclude: Iterable[str] = (), secrets: Iterable[str] = (),
          log: Callable[[str], None] = print,
          warn: Callable[[str], None] | None = None, large: int = LARGE_ARTIFACT,
          untrusted: Callable[[Sequence[str]], None] | None = None) -> Artifact:
    """Build ``source`` into the artifact directory ``out`` (replaced if present).

    ``environ`` is the runner's environment; the build's commands get only
    :func:`build_environ` of it. ``secrets`` are forge.yml's ``${VAR}`` values.
    ``untrusted`` shows the output of composer and the build commands
    (:meth:`forge_ci.gha.Runner.untrusted`); without it each line goes to ``log``.
    """
    patterns = (*ALWAYS_EXCLUDE, *config.exclude, *extra_exclude)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tree = tmp / "tree"
    listed = git_files(source, environ)
    if listed is None:
        selection = "every file (not a git checkout)"
        log(f"note: {source} is not a git checkout: copying every file except build.exclude")
        copy_tree(source, tree, patterns)
    else:
        selection = "git ls-files --cached --others --exclude-standard"
        log(f"files: what git tracks or does not ignore ({len(listed)}), minus build.exclude; "
            "plus what the build creates")
        copy_listed(source, tree, listed, patterns)
    env = build_environ(environ, config.env, secrets)
    if config.composer:
        if not (tree / "composer.json").exists():
            raise BuildError("build.composer is true but there is no composer.json",
                             hint="set build.composer: false or add composer.json")
        _run(list(COMPOSER), tree, env, "composer install", log, untrusted)
    for i, command in enumerate(config.commands):
        _run(command, tree, env, f"build.commands[{i}]", log, untrusted)
    _prune_excluded(tree, patterns)  # build commands may create node_modules etc.
    manifest = scan(tree)
    if manifest.total_size > large:
        (warn or log)(f"the artifact is {human_size(manifest.total_size)}, more than "
                      f"{human_size(large)}: check that no backups, uploads or other "
                      "data went in (add them to .gitignore or build.exclude)")
    (tmp / "manifest.json").write_bytes(manifest.to_bytes())
    info = {
        "digest": manifest.digest,
        "files": len(manifest.entries),
        "bytes": manifest.total_size,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": environ.get("GITHUB_SHA", ""),
        "forge": __version__,
        "selection": selection,
    }
    (tmp / "artifact.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Artifact(out, manifest)


def git_files(source: Path, environ: Mapping[str, str]) -> list[str] | None:
    """Paths under ``source`` git tracks or does not ignore; None outside a git checkout."""
    # Only what git needs: a GIT_DIR or GIT_WORK_TREE of the caller would point elsewhere.
    env = {k: v for k, v in environ.items() if k in ("PATH", "HOME", "LANG")}
    try:
        p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=source, capture_output=True, env=env)
    except FileNotFoundError:
        return None  # no git on this machine: the same as no checkout
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip()
        if "not a git repository" in err:
            return None
        # A checkout git refuses to read (e.g. "dubious ownership"): copying every file
        # instead would ship what .gitignore keeps out, so stop.
        first = err.splitlines()[0] if err else f"exit {p.returncode}"
        raise BuildError(f"git ls-files failed in {source}: {first}",
                         hint="fix what git says (for dubious ownership: git config --global "
                              "--add safe.directory PATH), then build again")
    names = p.stdout.decode("utf-8", "surrogateescape").split("\0")
    return sorted({n for n in names if n})


def copy_listed(src: Path, dst: Path, names: Iterable[str], patterns: tuple[str, ...]) -> None:
    """Copy the listed files and symlinks (as links) from src to dst, keeping modes of
    the directories on the way, skipping excluded paths and files gone since listing."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copymode(src, dst)
    made: set[str] = set()
    for rel in names:
        if excluded(rel, patterns):
            continue
        s = src / rel
        if not os.path.lexists(s):
            continue  # tracked but deleted in the work tree
        parent = os.path.dirname(rel)
        if parent and parent not in made:
            _make_dirs(src, dst, parent, made)
        if os.path.islink(s):
            os.symlink(os.readlink(s), dst / rel)
        elif s.is_dir():  # a submodule: git lists its directory
            copy_tree(s, dst / rel, patterns)
        else:
            shutil.copy2(s, dst / rel)


def _make_dirs(src: Path, dst: Path, rel_dir: str, made: set[str]) -> None:
    parts = rel_dir.split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in made:
            continue
        (dst / d).mkdir(exist_ok=True)
        shutil.copymode(src / d, dst / d)
        made.add(d)


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
