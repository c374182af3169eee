"""Long backup work says how far it is: progress lines in a CI log (not a terminal)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from .conftest import Site


def progress_lines(err: str, what: str) -> list[str]:
    return [line for line in err.splitlines()
            if re.fullmatch(rf"{what}: [\d,]+(/[\d,]+)? files, .*(B|iB)(/.*iB|/\d+ B)?", line)]


@pytest.mark.lab
def test_backup_verify_and_restore_report_progress(
        make_site: Callable[..., Site], capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file")
    # Every progress update becomes a line, as a step slower than the interval would.
    environ = dict(site.environ(), FORGE_PROGRESS_SECONDS="0")
    assert site.run("backup", "production", environ=environ, capsys=capsys) == 0
    uploading = progress_lines(site.last_err, "uploading")
    assert uploading and uploading[-1].startswith("uploading: 33/33 files")

    (site.uploads / "changed.txt").write_text("new content\n")
    site.chown()
    assert site.run("backup", "production", environ=environ, capsys=capsys) == 0
    assert progress_lines(site.last_err, "hashing on local")[-1].startswith(
        "hashing on local: 1/1 files")

    assert site.run("verify", "production", environ=environ, capsys=capsys) == 0
    verifying = progress_lines(site.last_err, "verifying")
    assert verifying and re.match(r"verifying: (\d+)/\1 files", verifying[-1])

    drill = site.root.parent / "drill"
    assert site.run("restore", "production", "--only", "files", "--to-dir", str(drill),
                    environ=environ, capsys=capsys) == 0
    restoring = progress_lines(site.last_err, "restoring files to local")
    assert restoring and re.match(r"restoring files to local: (\d+)/\1 files", restoring[-1])
