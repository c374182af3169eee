"""The deploy lock: flock(1) held by a command that lives as long as this run.

The lock is taken by ``flock`` on the target and held by a ``cat`` that waits on
the connection's stdin. When the run ends, or is killed with SIGKILL, or the
network drops, the connection closes, ``cat`` exits and the kernel releases the
lock: a lock whose owner is gone is recovered without anyone deleting a file.
``lock.json`` beside it records the owner only to tell the next run who holds it.

A script given as ``after`` runs on the target once the lock is held, in the
same round trip (a deploy observes the target there): its output is
:attr:`Lock.output`. ``sent`` is called once the request is on its way, before
the answer is awaited. It runs in a subshell, so an ``exit`` in it ends only
itself, never the command that holds the lock.

Where ``flock`` is missing (a cPanel jailed shell, CageFS) the lock is a
directory instead, ``.forge/lock.d``: ``mkdir`` is atomic, the holding shell
writes its pid into it and removes it when the connection closes (EOF on
stdin, or a hangup). A holder killed outright leaves the directory behind; the
next run finds its pid gone and takes the lock over (stale-lock recovery).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping

from forge_ci.deploy.releases import Layout
from forge_ci.errors import LockedError, RemoteCommandError
from forge_ci.remote.base import Host, Process, sh

_BUSY = 75


def owner_info(environ: Mapping[str, str], command: str) -> dict[str, str]:
    return {
        "command": command,
        "run": environ.get("GITHUB_RUN_ID", ""),
        "actor": environ.get("GITHUB_ACTOR", "") or environ.get("USER", ""),
        "repository": environ.get("GITHUB_REPOSITORY", ""),
        "runner": socket.gethostname(),
        "pid": str(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class Lock:
    def __init__(self, host: Host, layout: Layout, owner: Mapping[str, str],
                 wait: float = 0.0, note: Callable[[str], None] = lambda _m: None,
                 after: str = "", sent: Callable[[], None] | None = None) -> None:
        self.host, self.layout, self.owner, self.wait = host, layout, dict(owner), wait
        self.note, self.after, self.sent = note, after, sent
        self._proc: Process | None = None
        self.kind = "flock"  # or "mkdir" where flock is missing
        self.output = b""  # what ``after`` printed, once the lock is held

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        lay = self.layout
        wait = max(0, int(self.wait))
        # One round trip: the owner record arrives as the first line of stdin.
        # ``after``'s output ends with a token no file on the target can know.
        end = secrets.token_hex(16).encode() if self.after else b""
        script = _lock_script(lay.meta, lay.lock, lay.lock_owner, wait, self.after, end)
        proc = self.host.start(script)
        proc.write(json.dumps(self.owner).encode() + b"\n")
        if self.sent is not None:
            try:
                self.sent()  # the caller's work while the target answers
            except BaseException:
                proc.kill()  # the lock goes with the channel
                raise
        line = proc.readline().strip()
        if line == b"locked mkdir":
            self.kind = "mkdir"
            self.note(f"{self.host.name}: flock is not installed: using a mkdir lock "
                      f"({self.layout.lock}.d) instead")
        elif line != b"locked":
            status = proc.wait(30)
            if status == _BUSY:
                raise LockedError(self._busy_message(), hint=(
                    "wait for that run to finish (set lock_wait in forge.yml to wait), "
                    "or cancel it; a run that died releases the lock by itself"))
            raise RemoteCommandError(
                f"could not take the lock on {self.host.name}: "
                f"{proc.stderr().decode(errors='replace').strip()}")
        self._proc = proc
        if end:
            self.output = self._read_until(proc, b"\0" + end)

    def _read_until(self, proc: Process, end: bytes) -> bytes:
        """Everything ``after`` printed: up to ``end``, which nothing follows."""
        out = bytearray()
        while not out.endswith(end):
            chunk = proc.read()
            if not chunk:
                self.release()
                raise RemoteCommandError(
                    f"{self.host.name}: the connection ended just after the deploy lock was "
                    "taken; nothing was changed", hint="check the server and network, then "
                                                       "run again")
            out += chunk
        return bytes(out[:-len(end)])

    def _busy_message(self) -> str:
        raw = self.host.read(self.layout.lock_owner)
        try:
            o = json.loads(raw or b"{}")
        except ValueError:
            o = {}
        who = ", ".join(f"{k} {o[k]}" for k in ("command", "actor", "run", "runner", "since")
                        if o.get(k))
        return f"{self.host.name}: another forge run holds the lock ({who or 'owner unknown'})"

    def release(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            proc.close_stdin()
            proc.wait(30)
        except Exception:
            proc.kill()


def _lock_script(meta: str, lock: str, owner_file: str, wait: int, after: str = "",
                 end: bytes = b"") -> str:
    """The remote side of :meth:`Lock.acquire` (see the module docstring)."""
    d = sh(lock + ".d")
    # stdin stays the lock's: ``after`` reads nothing from it.
    then = f"(\n{after}\n) </dev/null\nprintf '\\0%s' {end.decode()}\n" if after else ""
    return (
        f"[ -d {sh(meta)} ] || mkdir -p {sh(meta)} || exit 1\n"
        "IFS= read -r owner\n"
        "if command -v flock >/dev/null 2>&1; then\n"
        f"  exec 9>>{sh(lock)} || exit 1\n"
        f"  flock -w {wait} 9 || exit {_BUSY}\n"
        f"  printf '%s\\n' \"$owner\" > {sh(owner_file)}\n"
        "  echo locked\n"
        f"{then}"
        "  exec cat >/dev/null\n"
        "fi\n"
        f"tries={wait}\n"
        f"until mkdir {d} 2>/dev/null; do\n"
        # The holder's pid is written just after its mkdir: give it a moment.
        f"  pid=$(cat {d}/pid 2>/dev/null)\n"
        f"  if [ -n \"$pid\" ] && ! kill -0 \"$pid\" 2>/dev/null; then\n"
        # Re-read first: another waiter may have recovered it and locked already.
        f"    [ \"$(cat {d}/pid 2>/dev/null)\" = \"$pid\" ] && rm -rf {d}; continue\n"
        "  fi\n"
        f"  [ \"$tries\" -gt 0 ] || exit {_BUSY}\n"
        "  tries=$((tries - 1)); sleep 1\n"
        "done\n"
        f"trap 'rm -rf {d}' EXIT\n"
        "trap 'exit 1' HUP INT TERM\n"
        f"echo $$ > {d}/pid\n"
        f"printf '%s\\n' \"$owner\" > {sh(owner_file)}\n"
        "echo locked mkdir\n"
        f"{then}"
        "cat >/dev/null\n"
    )
