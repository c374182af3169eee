"""Secrets the lab hands out, so the suite can check no test's output shows them.

Fixtures register every secret they create (deploy keys, database passwords,
backup identities, S3 keys, API and OIDC tokens) with `register`.
tests/conftest.py then checks, for every test:

- what pytest captured (stdout, stderr, log);
- what the test read itself: the output of every subprocess it ran with pipes
  (`Popen.communicate`, so `run` and `check_output` too; not forge's own calls,
  see `_called_by_forge`) and every `capsys.readouterr()`;
- the text files left in its `tmp_path`, its `lab_dir` and the directories a
  fixture asked to `watch` (step summaries, GITHUB_OUTPUT, logs, --json files).

A file the lab writes a secret into on purpose (a key file, a .env, a secrets
file for act) is registered with `holds_secrets`; a deploy path with
`deploy_target`, because forge writes each release's `.env` there by design.
Nothing is excluded by name pattern: a summary or log holding a secret fails.

`::add-mask::` lines are how secrets are registered with the Actions runner,
which never shows them, so they are skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

# Secrets are found by their 8-character pieces (grams): the text is cut into
# 8-character chunks of key-like characters (in C, by `re`), and only a text that
# shares a chunk with a secret's first grams is searched for it. The cost grows
# with the text, not with the thousands of key lines a session registers. A
# secret of 16 or more key-like characters always covers one such chunk: chunks
# start every 8 characters of each run of key-like characters.
_GRAM = 8
_KEYLIKE = r"A-Za-z0-9+/=_.\-"
_CHUNK = re.compile(rf"[{_KEYLIKE}]{{{_GRAM}}}")
_BY_GRAM: dict[str, set[str]] = {}
_GRAMS: set[str] = set()
_UNANCHORED: set[str] = set()  # secrets with other characters early on: searched for each time

_OPENSSH_HEADER = "b3BlbnNzaC1rZXktdjE"  # base64 of "openssh-key-v1"

_HOLDERS: set[str] = set()
_TARGETS: set[str] = set()
_WATCHED: list[Path] = []
_FINDINGS: list[str] = []
_LOCK = threading.Lock()

# Texts (files, subprocess outputs) larger than this, or with a NUL byte near the
# start, are data, not something a user reads: backup objects, uploads, tarballs,
# database contents a test compares.
MAX_TEXT = 2 << 20
_BINARY_PROBE = 8192
# Files and contents already found clean. Secrets are random and registered when
# made, so a text found clean cannot hold one registered later: a file unchanged
# since (same inode, size and mtime; writing to it moves its mtime) is not read
# again, and a known clean content (WordPress core in every release tree) is not
# searched again.
_CLEAN_FILES: set[tuple[int, ...]] = set()
_CLEAN_TEXTS: set[bytes] = set()


def register(secret: str) -> None:
    for part in [secret, *secret.splitlines()]:
        part = part.strip()
        # Short fragments and PEM armour lines would match innocent text, and so
        # would the first line of an OpenSSH key: a format header every key shares.
        if len(part) < 16 or "-----" in part or part.startswith(_OPENSSH_HEADER):
            continue
        with _LOCK:
            if re.fullmatch(f"[{_KEYLIKE}]{{{2 * _GRAM}}}", part[: 2 * _GRAM]):
                for k in range(_GRAM):
                    _BY_GRAM.setdefault(part[k : k + _GRAM], set()).add(part)
                    _GRAMS.add(part[k : k + _GRAM])
            else:
                _UNANCHORED.add(part)


def holds_secrets(path: Path) -> Path:
    """Mark a file the lab wrote a secret into on purpose (key, .env, secrets file)."""
    _HOLDERS.add(os.path.abspath(path))
    return path


def deploy_target(path: Path) -> Path:
    """Mark a deploy path: forge writes `.env` (0600) into every release under
    `releases/` on purpose (forge.yml's `dotenv`). Nothing else there may hold
    a secret: `.forge/` logs and lock files are checked like any other file."""
    _TARGETS.add(os.path.join(os.path.abspath(path), "releases"))
    return path


def watch(path: Path) -> None:
    """Check the text files under `path` after the current test too."""
    with _LOCK:
        _WATCHED.append(path)


def found_in(text: str | bytes) -> list[str]:
    """The registered secrets that appear in `text`, shortened for the message."""
    if not text or not (_GRAMS or _UNANCHORED):
        return []
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # secrets are ASCII; any byte is one character
    if "::add-mask::" in text:
        text = "\n".join(x for x in text.splitlines() if "::add-mask::" not in x)
    candidates = set(_UNANCHORED)
    for gram in _GRAMS.intersection(_CHUNK.findall(text)):
        candidates |= _BY_GRAM[gram]
    hits = {s for s in candidates if s in text}
    return sorted(s[:6] + "…" for s in hits)


def check(text: str | bytes | None, where: str) -> None:
    """Record a finding for the current test if `text` shows a registered secret
    (`text` that is data, big or binary, is not read)."""
    if text and not _is_data(text):
        _record(where, found_in(text))


def _is_data(text: str | bytes) -> bool:
    if len(text) > MAX_TEXT:
        return True
    return "\0" in text[:_BINARY_PROBE] if isinstance(text, str) else b"\0" in text[:_BINARY_PROBE]


def _record(where: str, leaked: list[str]) -> None:
    if leaked:
        with _LOCK:
            _FINDINGS.append(f"{where}: {', '.join(leaked)}")


def take_findings() -> list[str]:
    """What `check` found since the last call (the conftest asks once per test phase)."""
    with _LOCK:
        found = list(_FINDINGS)
        _FINDINGS.clear()
    return found


def take_watched() -> list[Path]:
    with _LOCK:
        watched = list(_WATCHED)
        _WATCHED.clear()
    return watched


def check_tree(root: Path) -> None:
    """`check` every small text file under `root` (symlinks are not followed)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _check_file(os.path.join(dirpath, name))


def _check_file(path: str) -> None:
    try:
        info = os.lstat(path)
    except OSError:  # gone meanwhile (a background copy, a cleanup)
        return
    if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= MAX_TEXT:
        return
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key in _CLEAN_FILES or _is_holder(path):
        return
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TEXT + 1)
    except OSError:
        return
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if digest not in _CLEAN_TEXTS and not _is_data(data):
        leaked = found_in(data)
        if leaked:
            _record(f"file {path}", leaked)
            return
    _CLEAN_TEXTS.add(digest)
    _CLEAN_FILES.add(key)


def _is_holder(path: str) -> bool:
    if path in _HOLDERS:
        return True
    release, name = os.path.split(path)
    return name == ".env" and os.path.dirname(release) in _TARGETS


# -- what a test reads from a subprocess ---------------------------------------------

_communicate = subprocess.Popen.communicate


def _checked_communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
    out, err = _communicate(self, *args, **kwargs)
    if _called_by_forge():
        return out, err
    program = _program(self.args)
    check(out, f"stdout of a `{program}` run")
    check(err, f"stderr of a `{program}` run")
    return out, err


def _called_by_forge() -> bool:
    """Whether forge_ci itself (run in-process by the test) made this call. What forge
    reads from its own commands (a hook's output before it is scrubbed, a file on the
    target) is not output; what forge shows goes to stdout, logs and files, which
    are all checked."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "subprocess":
        frame = frame.f_back
    return frame is not None and str(frame.f_globals.get("__name__")).startswith("forge_ci.")


def _program(args: Any) -> str:
    """The program's name only: a command line is no place to print either."""
    first = args[0] if isinstance(args, (list, tuple)) and args else args
    words = os.fsdecode(first).split() if isinstance(first, (str, bytes, os.PathLike)) else []
    return os.path.basename(words[0]) if words else "?"


def check_subprocess_output() -> None:
    """From now on, check what every `communicate` (and so `subprocess.run`,
    `check_output`) returns. Output that reaches the terminal is pytest's to
    capture; this is the output a test takes for itself."""
    subprocess.Popen.communicate = _checked_communicate  # type: ignore[method-assign]


def checking_subprocess_output() -> bool:
    return subprocess.Popen.communicate is _checked_communicate
