"""The Python side of outputs, summary and masks (gha.Runner), read back the way the
Actions runner reads its files — act covers the rest end to end, but not these edges."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

from forge_ci import gha


def read_output_file(text: str) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT as the runner does: NAME=value or NAME<<DELIM ... DELIM."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        heredoc = re.fullmatch(r"([^=<]+)<<(.+)", line)
        if heredoc:
            name, delim = heredoc.groups()
            body: list[str] = []
            while lines[i] != delim:
                body.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            out[name] = value
    return out


def _runner(tmp_path: Path) -> gha.Runner:
    return gha.Runner(in_actions=True, output_file=tmp_path / "output",
                      summary_file=tmp_path / "summary", stream=io.StringIO())


def test_outputs_single_and_multi_line_read_back_exactly(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    known_hosts = ("203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n"
                   "203.0.113.10 ecdsa-sha2-nistp256 AAAAE2VjZHNh")
    r.set_output("ip", "203.0.113.10")
    r.set_output("known-hosts", known_hosts)
    r.set_output("previous-release-id", "")
    got = read_output_file((tmp_path / "output").read_text())
    assert got == {"ip": "203.0.113.10", "known-hosts": known_hosts, "previous-release-id": ""}


def test_multiline_delimiter_is_fresh_and_cannot_be_forged(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    # A value that tries to end the block early and inject another output.
    r.set_output("note", "line\nEOF\nrelease-id=evil")
    r.set_output("note2", "a\nb")
    text = (tmp_path / "output").read_text()
    delims = re.findall(r"<<(.+)", text)
    assert len(set(delims)) == 2 and all(d.startswith("forge_") for d in delims)
    got = read_output_file(text)
    assert got["note"] == "line\nEOF\nrelease-id=evil" and "release-id" not in got


def test_masked_values_never_reach_outputs_summary_or_logs(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    out = io.StringIO()
    with redirect_stdout(out):
        r.mask("s3cr3t-value\nsecond-line-secret")
        r.set_output("x", "token=s3cr3t-value")
        r.summary("used second-line-secret here")
        r.log("log s3cr3t-value")
        r.error("failed with s3cr3t-value")
    assert out.getvalue().splitlines()[:3] == [
        "::add-mask::s3cr3t-value%0Asecond-line-secret", "::add-mask::s3cr3t-value",
        "::add-mask::second-line-secret"]
    assert "s3cr3t" not in (tmp_path / "output").read_text()
    assert "second-line" not in (tmp_path / "summary").read_text()
    assert "s3cr3t" not in r.stream.getvalue()  # type: ignore[attr-defined]
    assert "::error::failed with ***" in out.getvalue()


def test_short_values_are_not_masked_so_logs_stay_readable(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    with redirect_stdout(io.StringIO()):
        r.mask("abc")
    assert r.masked == []


def test_summary_appends_markdown_blocks(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    r.summary("### one\n")
    r.summary("### two")
    assert (tmp_path / "summary").read_text() == "### one\n\n### two\n\n"


def test_group_and_error_lines_escape_data(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    out = io.StringIO()
    with redirect_stdout(out), r.group("deploy 100%\nnow"):
        r.error("two\nlines", title="forge deploy")
    assert out.getvalue().splitlines() == [
        "::group::deploy 100%25%0Anow", "::error title=forge deploy::two%0Alines", "::endgroup::"]


def test_outside_actions_nothing_is_written(tmp_path: Path) -> None:
    r = gha.Runner.from_env({}, stream=io.StringIO())
    r.set_output("a", "b")
    r.summary("x")
    assert r.output_file is None and not list(tmp_path.iterdir())
