"""The build manifest: what ships, what is refused, and what a redeploy sends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge_ci.build.builder import build, excluded, open_artifact
from forge_ci.build.manifest import Entry, Manifest, diff, scan
from forge_ci.config.models import BuildConfig
from forge_ci.errors import ArtifactError, BuildError


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_scan_records_hash_mode_and_links(tmp_path: Path) -> None:
    tree(tmp_path, {"web/index.php": "<?php", "bin/run": "#!/bin/sh"})
    (tmp_path / "bin/run").chmod(0o755)
    os.symlink("index.php", tmp_path / "web/alias.php")
    m = scan(tmp_path)
    assert m.entries["bin/run"].mode == 0o755
    assert m.entries["web/index.php"].size == 5
    assert m.entries["web/alias.php"] == Entry("symlink", 0o777, target="index.php")
    assert Manifest.from_bytes(m.to_bytes()) == m


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "../.."])
def test_links_out_of_the_tree_are_refused(tmp_path: Path, target: str) -> None:
    tree(tmp_path, {"web/index.php": "x"})
    os.symlink(target, tmp_path / "web/evil")
    with pytest.raises(ArtifactError, match="outside the release"):
        scan(tmp_path)


def test_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ArtifactError, match="not a file"):
        scan(tmp_path)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "a//b", "", "./a"])
def test_hostile_manifest_paths_are_refused(path: str) -> None:
    data = json.dumps({"version": 1, "files": {path: {"type": "dir", "mode": 493}}}).encode()
    with pytest.raises(ArtifactError):
        Manifest.from_bytes(data)


def test_setuid_and_devices_are_refused() -> None:
    for entry in (
        {"type": "file", "mode": 0o4755, "size": 1, "sha256": "0" * 64},
        {"type": "chardev", "mode": 0o644},
    ):
        with pytest.raises(ArtifactError):
            Manifest.from_bytes(json.dumps({"version": 1, "files": {"x": entry}}).encode())


def test_diff_sends_changed_and_unlinks_replaced() -> None:
    f = lambda sha: Entry("file", 0o644, 1, sha * 64)  # noqa: E731
    old = Manifest({"a": f("1"), "b": f("2"), "d": Entry("dir", 0o755), "d/x": f("3")})
    new = Manifest({"a": f("1"), "b": f("4"), "c": f("5")})
    d = diff(old, new)
    assert d.send == ("b", "c")
    assert d.remove == ("b", "d")  # d/x goes with d
    assert diff(None, new).send == ("a", "b", "c")


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from("0123"), max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from("0123"), max_size=4),
)
def test_diff_applied_to_old_gives_new(
    old_files: dict[str, str], new_files: dict[str, str]
) -> None:
    mk = lambda d: Manifest({k: Entry("file", 0o644, 1, v * 64) for k, v in d.items()})  # noqa: E731
    old, new = mk(old_files), mk(new_files)
    d = diff(old, new)
    result = {p: e for p, e in old.entries.items() if p not in d.remove}
    result.update({p: new.entries[p] for p in d.send})
    assert result == dict(new.entries)


def test_excludes_are_gitignore_like() -> None:
    pats = ("node_modules", "web/app/uploads", "*.log")
    assert excluded("web/app/themes/sage/node_modules/x.js", pats)
    assert excluded("web/app/uploads/2024/a.jpg", pats)
    assert excluded("debug.log", pats)
    assert not excluded("web/app/uploads-old/a", pats)
    assert not excluded("web/index.php", pats)


def test_build_runs_commands_and_drops_excluded_output(tmp_path: Path) -> None:
    src = tree(tmp_path / "site", {"web/index.php": "<?php", ".env": "SECRET=1", "tests/t": ""})
    out = tmp_path / "out"
    cfg = BuildConfig(
        commands=("mkdir -p node_modules && echo built > web/built.txt",),
        exclude=("node_modules", "tests"),
    )
    art = build(src, cfg, out, environ=dict(os.environ), log=lambda _m: None)
    assert set(art.manifest.entries) == {"web", "web/index.php", "web/built.txt"}
    assert open_artifact(out).digest == art.digest


def test_failed_build_command_is_a_build_error(tmp_path: Path) -> None:
    src = tree(tmp_path / "site", {"web/index.php": "<?php"})
    with pytest.raises(BuildError, match=r"build.commands\[0\] failed with exit 3"):
        build(
            src,
            BuildConfig(commands=("exit 3",)),
            tmp_path / "out",
            environ=dict(os.environ),
            log=lambda _m: None,
        )
    assert not (tmp_path / "out").exists()


def test_composer_builds_with_a_path_repository(tmp_path: Path) -> None:
    pkg = tree(tmp_path / "pkg", {"src/Hello.php": "<?php namespace Acme; class Hello {}"})
    (pkg / "composer.json").write_text(
        json.dumps(
            {"name": "acme/hello", "version": "1.0.0", "autoload": {"psr-4": {"Acme\\": "src/"}}}
        )
    )
    site = tree(tmp_path / "site", {"web/index.php": "<?php"})
    (site / "composer.json").write_text(
        json.dumps(
            {
                "name": "acme/site",
                "require": {"acme/hello": "1.0.0"},
                "repositories": [{"type": "path", "url": str(pkg), "options": {"symlink": False}}],
                "config": {"allow-plugins": False},
            }
        )
    )
    env = dict(os.environ, COMPOSER_HOME=str(tmp_path / "ch"), COMPOSER_ALLOW_SUPERUSER="1")
    art = build(site, BuildConfig(composer=True), tmp_path / "out", environ=env,
                log=lambda _m: None)
    assert "vendor/autoload.php" in art.manifest.entries
    assert "vendor/acme/hello/src/Hello.php" in art.manifest.entries


@given(st.lists(st.sampled_from(["a", "b.c", ".", "..", "", ".x", "..y", "/"]), min_size=1,
                max_size=5).map("/".join))
def test_path_check_agrees_with_normpath(path: str) -> None:
    import posixpath

    from forge_ci.build.manifest import check_path

    norm = posixpath.normpath(path) if path else ""
    expected_ok = bool(path) and path == norm and not path.startswith("/") and \
        norm != ".." and not norm.startswith("../") and norm != "."
    try:
        check_path(path, "test")
        ok = True
    except ArtifactError:
        ok = False
    assert ok == expected_ok, path


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    tree(tmp_path, {"web/index.php": "x"})
    (tmp_path / os.fsdecode(b"web/caf\xe9.jpg")).write_text("latin-1 name")
    with pytest.raises(ArtifactError, match=r"caf\\xe9.jpg' is not valid UTF-8"):
        scan(tmp_path)


def test_a_manifest_naming_a_non_utf8_path_is_refused() -> None:
    data = json.dumps({"version": 1, "files": {
        "web/caf\udce9.jpg": {"type": "file", "mode": 420, "size": 1, "sha256": "0" * 64}}})
    with pytest.raises(ArtifactError, match="not valid UTF-8"):
        Manifest.from_bytes(data.encode())


_SHA = "a" * 64


def _live(files: dict[str, dict[str, object]], compact: bool = False) -> bytes:
    if compact:  # laid out as forge stores it: equal entries are matched by their bytes
        return json.dumps({"version": 1, "files": files}, sort_keys=True,
                          separators=(",", ":")).encode()
    return json.dumps({"version": 1, "files": files}).encode()


@pytest.mark.parametrize("compact", [False, True])
def test_a_live_manifest_read_against_the_new_one_is_still_checked_where_it_differs(
        compact: bool) -> None:
    known = Manifest({"web": Entry("dir", 0o755), "web/a.php": Entry("file", 0o644, 3, _SHA),
                      "web/l": Entry("symlink", 0o777, target="a.php")})
    same = {"web": {"type": "dir", "mode": 0o755},
            "web/a.php": {"type": "file", "mode": 0o644, "size": 3, "sha256": _SHA}}
    # Equal entries come back as they were; a changed one is read as itself.
    read = Manifest.from_bytes(_live({**same, "web/l": {"type": "symlink", "mode": 0o777,
                                                        "target": "a.php"}}, compact), known=known)
    assert read == known
    changed = {**same, "web/a.php": {"type": "file", "mode": 0o600, "size": 4, "sha256": _SHA}}
    assert Manifest.from_bytes(_live(changed, compact), known=known).entries["web/a.php"] == Entry(
        "file", 0o600, 4, _SHA)
    refused: list[dict[str, dict[str, object]]] = [
        {**same, "../x": {"type": "file", "mode": 0o644, "size": 1, "sha256": _SHA}},
        {**same, "web/a.php": {"type": "file", "mode": 0o4755, "size": 3, "sha256": _SHA}},
        {**same, "web/l": {"type": "symlink", "mode": 0o777, "target": "../../etc"}},
        # Each link alone stays inside; through the known one it climbs out.
        {**same, "web/l": {"type": "symlink", "mode": 0o777, "target": ".."},
         "web/m": {"type": "symlink", "mode": 0o777, "target": "l/.."}},
    ]
    for files in refused:
        with pytest.raises(ArtifactError):
            Manifest.from_bytes(_live(files, compact), source="live", known=known)


_entries = st.dictionaries(
    st.sampled_from(["a", "a/b", "a-b", "b", 'q"uo}te', "z/\u00e9", "web/x.php", "web"]),
    st.builds(Entry, st.just("file"), st.sampled_from([0o644, 0o600]), st.integers(0, 9),
              st.sampled_from(["a" * 64, "b" * 64])), max_size=6)


@given(_entries, _entries)
def test_a_stored_manifest_reads_back_the_same_whatever_the_new_one_holds(
        old: dict[str, Entry], new: dict[str, Entry]) -> None:
    live, known = Manifest(old), Manifest(new)
    assert Manifest.from_bytes(live.to_bytes(), known=known) == live


_names = st.text(st.sampled_from(["a", "/", ".", '"', "\\", "\n", "\x00", "\u00e9", "\u2028",
                                  "\U0001f600", "}", ","]), min_size=1, max_size=6)
_any_entry = st.one_of(
    st.builds(Entry, st.just("file"), st.integers(0, 0o777), st.integers(0, 2**40),
              st.sampled_from(["a" * 64, "0" * 64])),
    st.builds(Entry, st.just("dir"), st.integers(0, 0o777)),
    st.builds(Entry, st.just("symlink"), st.just(0o777), target=_names))


@given(st.dictionaries(_names, _any_entry, max_size=8))
def test_a_manifest_is_stored_as_compact_sorted_json(entries: dict[str, Entry]) -> None:
    # The stored form other runs (and earlier versions) compare byte for byte,
    # and the digest a release id is made from.
    expected = json.dumps({"version": 1, "files": {p: e.to_json() for p, e in entries.items()}},
                          sort_keys=True, separators=(",", ":")).encode()
    assert Manifest(entries).to_bytes() == expected
