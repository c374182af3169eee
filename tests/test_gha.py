"""The runner interface: text forge did not write never becomes a workflow command."""

from __future__ import annotations

import io
import itertools

from forge_ci import gha
from tests.actions_log import commands

HOSTILE = [
    "::stop-commands::x",
    "::add-mask::foo",
    "::set-output name=release-id::evil",
    "::error title=forged::forged error",
    "  ::group::indented",
    "text then ##[set-output name=release-id;]evil",
    "::endgroup::",
]


def actions_runner() -> tuple[gha.Runner, io.StringIO]:
    out = io.StringIO()
    return gha.Runner(in_actions=True, stream=out), out


def test_untrusted_text_in_actions_issues_no_command_and_still_reads() -> None:
    runner, out = actions_runner()
    runner.untrusted(HOSTILE)
    log = out.getvalue()
    cmds = commands(log)
    token = cmds[0][1]
    assert cmds == [("stop-commands", token), ("resume", token)]
    assert token.startswith("forge-text-") and len(token) > 40
    assert not any(token in line for line in HOSTILE)
    for line in HOSTILE:
        assert f"    {line}" in log.splitlines()


def test_each_block_has_its_own_token() -> None:
    runner, out = actions_runner()
    runner.untrusted(["::add-mask::a"])
    runner.untrusted(["::add-mask::b"])
    tokens = [data for name, data in commands(out.getvalue()) if name == "stop-commands"]
    assert len(tokens) == 2 and tokens[0] != tokens[1]


def test_a_token_found_in_the_text_is_never_chosen() -> None:
    draws = itertools.chain(["aaaa", "aaaa", "bbbb"])
    text = "    ::forge-text-AAAA::\n    ::add-mask::x"
    assert gha.stop_token(text, draw=lambda: next(draws)) == "forge-text-bbbb"


def test_a_forged_closing_line_cannot_end_the_fence() -> None:
    runner, out = actions_runner()
    # Whatever the text guesses, the resume comes only from forge's own last line.
    runner.untrusted(["::forge-text-0123::", "::add-mask::secret-ish", "##[forge-text-x]"])
    cmds = commands(out.getvalue())
    assert [name for name, _ in cmds] == ["stop-commands", "resume"]
    assert out.getvalue().rstrip("\n").splitlines()[-1] == f"::{cmds[0][1]}::"


def test_carriage_returns_cannot_smuggle_a_line() -> None:
    runner, out = actions_runner()
    runner.untrusted(["progress 10%\r::set-output name=x::evil", "a\r\n::add-mask::y"])
    assert [name for name, _ in commands(out.getvalue())] == ["stop-commands", "resume"]


def test_a_message_carrying_server_text_is_fenced_only_when_it_needs_it() -> None:
    runner, out = actions_runner()
    runner.log("web1: switching back FAILED: rm: boom\n::set-output name=release-id::evil")
    runner.log("web1: connected")
    log = out.getvalue()
    assert [name for name, _ in commands(log)] == ["stop-commands", "resume"]
    assert log.splitlines()[-1] == "web1: connected"


def test_on_a_terminal_untrusted_text_is_plain_and_indented() -> None:
    out = io.StringIO()
    runner = gha.Runner(in_actions=False, stream=out)
    runner.untrusted(["::add-mask::foo", "done"])
    assert out.getvalue() == "    ::add-mask::foo\n    done\n"


def test_untrusted_text_is_redacted() -> None:
    runner, out = actions_runner()
    runner.mask("hunter2-secret")
    runner.untrusted(["password is hunter2-secret"])
    assert "hunter2-secret" not in out.getvalue() and "password is ***" in out.getvalue()


def test_a_result_on_stdout_quoting_a_server_is_fenced_too() -> None:
    runner, _ = actions_runner()
    text = runner.as_text("rollback: web1 said:\n::add-mask::x\ndone")
    assert [name for name, _ in commands(text)] == ["stop-commands", "resume"]
    assert runner.as_text("released 2026-12-06") == "released 2026-12-06"
    assert gha.Runner(in_actions=False).as_text("::add-mask::x") == "::add-mask::x"
