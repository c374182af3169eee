"""Process plumbing shared by the lab services.

Every service is a plain process started in its own session (so one signal
reaches its workers), logging to a file in its own directory. Waits are
bounded; a failed wait raises `LabError` carrying the tail of the log, because
"did not start" without the service's own words is useless in CI.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

_PR_SET_PDEATHSIG = 1
_LIVE: dict[int, str] = {}
_LIVE_LOCK = threading.Lock()
_HANDED_OUT: set[int] = set()
T = TypeVar("T")


class LabError(RuntimeError):
    """A lab service failed to start, stop or answer in time."""


class LabUnavailable(LabError):
    """This machine lacks something the lab needs (a binary, root)."""


def require_binary(name: str, hint: str = "") -> str:
    """Absolute path of `name` on PATH (or /usr/sbin), else LabUnavailable."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        extra = f" ({hint})" if hint else ""
        raise LabUnavailable(
            f"lab needs `{name}` but it is not installed{extra}; "
            "run .ci/run or install the Debian packages it lists"
        )
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabUnavailable("the lab starts sshd, nginx and MariaDB as root: run tests as root")


def lab_root() -> Path:
    """A fresh world-traversable directory for one service.

    pytest's tmp_path lives under a 0700 directory, which the deploy user,
    nginx workers and sshd (reading authorized_keys as the user) cannot cross.
    """
    path = Path(tempfile.mkdtemp(prefix="forge-lab-"))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now.

    Ports already handed out in this process are never reused, so two services
    started back to back cannot be given the same one before either binds.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise LabError("no free loopback port found")


def on_free_port(start: Callable[[int], T], attempts: int = 3) -> T:
    """Call `start(port)` with a free port; retry with another if it was taken.

    Another process (or an outgoing connection) can grab the port between our
    probe and the service's bind; `start` must clean up after itself and raise
    LabError, whose message carries the service's log ("already in use").
    """
    for attempt in range(1, attempts + 1):
        try:
            return start(free_port())
        except LabError as exc:
            if attempt == attempts or "already in use" not in str(exc):
                raise
    raise LabError("unreachable")


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log: Path | Sequence[Path] = (),
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `check` until true; fail early if `proc` exits; raise with the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what}: process exited with {proc.returncode}\n{_log_tail(log)}")
        time.sleep(0.05)
    raise LabError(f"{what}: not ready after {timeout:.0f}s\n{_log_tail(log)}")


def _log_tail(log: Path | Sequence[Path]) -> str:
    logs = [log] if isinstance(log, Path) else list(log)
    return "\n".join(f"--- tail of {path} ---\n{tail(path)}" for path in logs)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    # If pytest is killed outright, the kernel sends the service SIGTERM, so a
    # crashed run does not leave listeners behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def wait_or_stop(
    check: Callable[[], bool],
    stop: Callable[[], None],
    *,
    what: str,
    timeout: float,
    log: Path | Sequence[Path],
    proc: subprocess.Popen[bytes],
) -> None:
    """`wait_until` for a service just spawned: if it never gets ready, stop it
    before raising, so a failed start leaves no process behind."""
    try:
        wait_until(check, what=what, timeout=timeout, log=log, proc=proc)
    except LabError:
        stop()
        raise


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service in its own session, stdout+stderr appended to `log`.

    With `user`, the process runs as that user and its primary group only
    (no root supplementary groups leak in).
    """
    group: int | None = None
    extra_groups: list[int] | None = None
    if user is not None:
        group = pwd.getpwnam(user).pw_gid
        extra_groups = []
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            user=user,
            group=group,
            extra_groups=extra_groups,
            env=env,
            cwd=cwd,
        )
    with _LIVE_LOCK:
        _LIVE[proc.pid] = argv[0]
    return proc


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid`, read from /proc (sshd's session children
    call setsid, so killing the process group alone misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def terminate(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Stop a service and everything it spawned; SIGKILL whatever lingers."""
    if proc.poll() is None:
        family = descendants(proc.pid)
        _signal([proc.pid], sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal([proc.pid], signal.SIGKILL)
            proc.wait(timeout=5)
        _signal([pid for pid in family if _alive(pid)], signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float = 60.0,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a short command; raise LabError with its output when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
            env=env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}".strip()
        raise LabError(f"{what}: exit {done.returncode}\n{output}")
    return done.stdout


@atexit.register
def _kill_leftovers() -> None:
    # Last line of defence: a fixture that forgot to stop its service.
    with _LIVE_LOCK:
        pids = list(_LIVE)
    for pid in pids:
        for victim in [pid, *descendants(pid)]:
            _signal([victim], signal.SIGKILL)
