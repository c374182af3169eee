"""Progress lines: a live line on a terminal, a plain line every few seconds in CI."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from forge_ci import gha
from forge_ci.build.builder import build
from forge_ci.config.models import BuildConfig
from forge_ci.deploy.ship import ship
from forge_ci.progress import Progress
from forge_ci.remote.local import LocalHost
from forge_ci.units import human_size


class Clock:
    def __init__(self, step: float = 0.0) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (31.2 * 2**20, "31.2 MiB"),
    (3_006_000_000, "2.8 GiB"), (5 * 2**40, "5.0 TiB"),
])
def test_human_sizes(n: float, text: str) -> None:
    assert human_size(n) == text


def test_ci_gets_a_line_every_interval_and_a_last_one() -> None:
    clock, lines = Clock(), []
    p = Progress("shipping", files=4300, nbytes=75 * 2**20, write=lines.append,
                 interval=5, clock=clock)
    clock.now += 1
    p.advance(1000, 10 * 2**20)
    assert lines == []  # a short step says nothing
    clock.now += 4.5
    p.advance(234, int(21.2 * 2**20))
    assert lines == ["shipping: 1,234/4,300 files, 31.2 MiB/75.0 MiB"]
    clock.now += 3
    p.advance(1, 0)
    assert len(lines) == 1
    clock.now += 2
    p.advance(1, 0)
    assert len(lines) == 2
    p.advance(3064, 2**20)
    p.done()
    assert lines[-1] == "shipping: 4,300/4,300 files, 32.2 MiB/75.0 MiB"


def test_a_short_step_prints_nothing_even_at_the_end() -> None:
    lines: list[str] = []
    with Progress("verifying", files=3, write=lines.append, interval=5, clock=Clock()) as p:
        p.advance(3, 100)
    assert lines == []


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    tty, lines = Tty(), []
    clock = Clock(step=0.25)
    with Progress("restoring", files=2, nbytes=2048, write=lines.append, live=tty,
                  clock=clock) as p:
        p.advance(1, 1024)
        p.advance(1, 1024)
    out = tty.getvalue()
    assert lines == []
    assert out.startswith("\rrestoring: 1/2 files, 1.0 KiB/2.0 KiB")
    assert out.endswith("\rrestoring: 2/2 files, 2.0 KiB/2.0 KiB\n")
    assert out.count("\n") == 1


def test_the_runner_picks_live_lines_only_on_a_terminal_outside_actions() -> None:
    clock = Clock(step=10)
    for stream, in_actions, live in [(Tty(), False, True), (Tty(), True, False),
                                      (io.StringIO(), False, False)]:
        runner = gha.Runner(in_actions=in_actions, stream=stream, clock=clock)
        with runner.progress("backing up", files=1) as p:
            p.advance(1, 10)
        assert stream.getvalue().startswith("\r") == live, (in_actions, stream.getvalue())
        assert "backing up: 1/1 files, 10 B" in stream.getvalue()


def test_the_interval_comes_from_the_environment() -> None:
    assert gha.Runner.from_env({"FORGE_PROGRESS_SECONDS": "30"}).progress_interval == 30
    assert gha.Runner.from_env({"FORGE_PROGRESS_SECONDS": "soon"}).progress_interval == 5
    assert gha.Runner.from_env({}).progress_interval == 5


def test_a_long_ship_prints_progress_lines_in_ci(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(40):
        (src / "web" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / "web" / f"d{i % 4}" / f"f{i}.bin").write_bytes(bytes([i]) * 300_000)
    artifact = build(src, BuildConfig(composer=False), tmp_path / "out", environ={})
    out = io.StringIO()
    runner = gha.Runner(stream=out, clock=Clock(step=6))  # every read "takes" 6 s
    release = tmp_path / "target" / "r1"
    release.parent.mkdir()
    ship(LocalHost(), artifact, str(release), None, sorted(artifact.manifest.entries), [],
         runner.log, progress=runner.progress)
    lines = [x for x in out.getvalue().splitlines() if ": shipping: " in x]
    assert len(lines) >= 2
    assert lines[-1] == "local: shipping: 40/40 files, 11.4 MiB/11.4 MiB"
    assert (release / "web/d1/f1.bin").read_bytes() == b"\x01" * 300_000
