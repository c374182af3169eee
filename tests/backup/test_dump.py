"""A dump that fails or is cut short fails the backup: no manifest, no dump object."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .conftest import Site

FAKE = """#!/bin/sh
cat > /dev/null   # the option file on /dev/stdin
printf -- '-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\\n'
printf 'CREATE TABLE t (a int);\\nINSERT INTO t VALUES (1);\\n'
{tail}
exit {status}
"""


def _fake_dump(bin_dir: Path, *, status: int, trailer: bool) -> None:
    bin_dir.mkdir(exist_ok=True)
    tail = "printf -- '-- Dump completed on 2024-01-01 00:00:00\\n'" if trailer else ""
    tool = bin_dir / "mariadb-dump"
    tool.write_text(FAKE.format(tail=tail, status=status))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def _stored(store: Path) -> list[str]:
    if not store.exists():
        return []
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


@pytest.mark.parametrize(("status", "trailer", "message"), [
    (0, False, "cut short"),
    (3, True, "failed (exit 3)"),
])
def test_a_broken_dump_fails_the_backup(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], status: int,
                                        trailer: bool, message: str) -> None:
    site: Site = make_site(store="file")
    # The local target runs commands with this process's PATH.
    _fake_dump(lab_dir / "bin", status=status, trailer=trailer)
    monkeypatch.setenv("PATH", f"{lab_dir / 'bin'}:{os.environ['PATH']}")
    assert site.run("backup", "production", read=False, capsys=capsys) == 1
    assert message in site.last_err
    assert _stored(lab_dir / "store") == []  # not even the dump: its put was abandoned


def test_wrong_password_fails_the_backup(make_site, lab_dir: Path,  # type: ignore[no-untyped-def]
                                         capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file")
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    before = _stored(lab_dir / "store")
    environ = dict(site.environ(read=False), DB_PASSWORD="wrong")
    assert site.run("backup", "production", environ=environ, capsys=capsys) == 1
    assert "Access denied" in site.last_err and "wrong" not in site.last_err
    assert _stored(lab_dir / "store") == before
    assert sid in " ".join(before)


def test_the_password_never_reaches_a_command_line(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file")
    spy = lab_dir / "bin"
    spy.mkdir()
    argv_log = lab_dir / "argv.log"
    for tool in ("mariadb-dump", "mariadb"):
        real = f"/usr/bin/{tool}"
        (spy / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "$0 $*" >> {argv_log}\n'
                                f'exec {real} "$@"\n')
        (spy / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}:{os.environ['PATH']}")
    site.json(capsys, "backup", "production", read=False)
    drill = site.db.name + "_d"
    site.server.sql(f"GRANT ALL ON `{drill}`.* TO '{site.db.user}'@'%';")
    assert site.run("restore", "production", "--database", drill, "--only", "database") == 0
    logged = argv_log.read_text()
    assert "mariadb-dump --defaults-extra-file=/dev/stdin" in logged
    assert "mariadb --defaults-extra-file=" in logged
    assert site.db.password not in logged
    site.server.sql(f"DROP DATABASE IF EXISTS `{drill}`;")


def test_a_missing_dump_tool_is_named_with_how_to_install_it(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file")
    # Every tool of this machine but the dump tools: a runner without the MariaDB client.
    bare = lab_dir / "bare-bin"
    bare.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for name in os.listdir(d):
            if name not in ("mariadb-dump", "mysqldump") and not (bare / name).exists():
                os.symlink(os.path.join(d, name), bare / name)
    monkeypatch.setenv("PATH", str(bare))
    assert site.run("backup", "production", read=False, capsys=capsys) == 1
    assert "mariadb-dump (or mysqldump) is not installed" in site.last_err
    assert "apt-get install mariadb-client" in site.last_err
    assert "credentials" not in site.last_err and "internal error" not in site.last_err
    # A failed backup still says so in the step summary.
    summary = site.summary.read_text()
    assert "forge-ci backup production: failed (exit 1)" in summary
    assert "mariadb-dump (or mysqldump) is not installed" in summary
