"""Make PHP see the release ``current`` points at (deploy step: after the switch).

``php.refresh`` says how, per server setup:

``none``
    nginx passes ``$realpath_root`` (as provisioning sets it up): each release has
    its own paths, so neither opcache nor the realpath cache can hand out the old
    tree. Nothing to do; the marker check proves it on every deploy.
``command``
    ``reload_command`` on each host, typically a graceful FPM reload: new workers,
    empty caches.
``opcache-reset``
    For setups that pass the symlinked path (``$document_root``) and run opcache
    with ``validate_timestamps=0``: the pool keeps serving the old release's
    compiled files under the same paths until its opcache is reset *inside that
    pool*. forge writes :data:`SCRIPT` into the release root (outside ``web/``:
    no URL reaches it) and sends one FastCGI request for it straight to the pool's
    socket, from the host itself, with a small client in core Perl
    (``fastcgi.pl``; perl-base is Essential on Debian and Ubuntu, while cgi-fcgi,
    cachetool and even the PHP CLI may be missing). ``opcache_reset()`` schedules
    a restart of the shared cache, which happens once no request that began
    before it still runs; until then workers skip the cache but may still resolve
    ``current`` through their realpath cache (the old release). So the client asks
    again every 10 ms, in the same command, until the restart is seen (at most
    :data:`SETTLE` seconds). After it, each worker empties its realpath cache at
    its next request (``accel_activate``): every request runs the new release.

    Why not FastCGI from the runner through an SSH ``direct-streamlocal`` channel:
    paramiko has no API for it, servers often disable forwarding
    (``DisableForwarding``, ``restrict`` keys), and sshd's "open failed" cannot
    say whether the socket is missing, refused or forbidden. On the host the
    errno is at hand, and the local target works the same way.

Before the switch, :func:`probe` runs the same script without resetting, so a
wrong socket, a pool that cannot read the release or an ``opcache.restrict_api``
in the way fails the deploy while the live site is untouched. Every failure is a
:class:`DeployFailed` that names the host and the socket and says what to do.
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from forge_ci.config.models import PhpConfig
from forge_ci.errors import DeployFailed
from forge_ci.remote.base import Host, Result, sh

Mode = Literal["probe", "reset"]

SCRIPT = ".forge-php-refresh.php"
TIMEOUT = 30  # seconds the pool may take to answer (all workers busy: queued)
# Seconds to wait, after the reset, for the cache's restart: it happens once no
# request that began before the reset is still running.
SETTLE = 10
_PREFIX = "forge-php-refresh"
_EOF = "FORGE_PHP_REFRESH_EOF"
_OK = {"probe": ("ready", "off"), "reset": ("reset", "pending", "off")}
_FIX_SOCKET = ("set php.fpm_socket to the socket of the pool that serves the site: the "
               "path after 'unix:' in its nginx fastcgi_pass (ls /run/php/ on the host)")


def _resource(name: str) -> str:
    return (resources.files("forge_ci.deploy") / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Answer:
    """What the pool said: a state from ``php_refresh.php`` and its detail; after a
    reset, ``settled`` says whether the cache's restart was seen to happen."""

    state: str
    detail: str = ""
    settled: bool | None = None


def request_script(socket: str, release_dir: str, ask: str, timeout: int = TIMEOUT,
                   settle: tuple[str, str, int] | None = None) -> str:
    """The shell run on the host: write the PHP script, send the FastCGI request
    (the Perl client comes on stdin), remove the script whatever happened.
    ``settle``: then ask (again, until, seconds), see ``fastcgi.pl``."""
    php = _resource("php_refresh.php")
    then = "" if settle is None else " " + sh(settle[0], settle[1], str(int(settle[2])))
    assert _EOF not in php  # the heredoc must not end early
    return (
        f"f={sh(posixpath.join(release_dir, SCRIPT))}\n"
        "trap 'rm -f -- \"$f\"; exit 129' HUP INT TERM\n"
        "umask 022\n"
        # A new file, never one hard-linked with another release.
        "rm -f -- \"$f\"\n"
        f"cat > \"$f\" <<'{_EOF}' || exit 20\n{php}{_EOF}\n"
        "if command -v perl >/dev/null 2>&1; then\n"
        f"  perl - {sh(socket)} \"$f\" {sh(ask)} {int(timeout)}{then}\n"
        "  s=$?\n"
        "else\n"
        "  s=127\n"
        "fi\n"
        "rm -f -- \"$f\"\n"
        "exit $s\n"
    )


def ask(host: Host, socket: str, release_dir: str, mode: Mode,
        timeout: int = TIMEOUT, settle: int = SETTLE) -> Answer:
    """A FastCGI request to the pool at ``socket`` for the script in ``release_dir``;
    after a reset, more until the cache's restart has happened (``settle`` seconds
    at most), all in one command on the host."""
    nonce = secrets.token_hex(16)
    then = (f"settle {nonce}", f"{_PREFIX} {nonce} settled", settle) if mode == "reset" else None
    result = host.run(request_script(socket, release_dir, f"{mode} {nonce}", timeout, then),
                      input=_resource("fastcgi.pl").encode(), check=False,
                      timeout=timeout * 2 + settle + 30)
    return parse(result, host.name, socket, release_dir, mode, nonce, timeout)


def probe(host: Host, php: PhpConfig, release_dir: str) -> Answer | None:
    """Before the switch: can the pool run a script from ``release_dir`` and reset
    its opcache? None when the method needs no pool."""
    if php.refresh != "opcache-reset" or not php.fpm_socket:
        return None
    return ask(host, php.fpm_socket, release_dir, "probe")


def refresh(host: Host, php: PhpConfig, release_dir: str | None) -> str | None:
    """After a switch to ``release_dir`` (None: nothing is served any more): make
    PHP run it. Returns what was done, for the log; None when nothing was."""
    if php.refresh == "command" and php.reload_command:
        r = host.run(php.reload_command, check=False, timeout=120)
        if r.status != 0:
            raise DeployFailed(f"{host.name}: PHP reload command failed (exit {r.status}): "
                               f"{r.tail(3)}")
        return "reload command done"
    if php.refresh != "opcache-reset" or not php.fpm_socket or release_dir is None:
        return None
    sock = php.fpm_socket
    answer = ask(host, sock, release_dir, "reset")
    if answer.state == "off":
        return f"opcache is off in the pool at {sock}: nothing to reset"
    if answer.settled:
        return f"opcache reset in the pool at {sock}"
    return (f"opcache reset in the pool at {sock} scheduled, not done after {SETTLE}s: a "
            "request that began before it is still running, and until it ends PHP may "
            "run the old release; the health checks decide")


# -- reading the answer -------------------------------------------------------

def parse(result: Result, host: str, socket: str, release_dir: str, mode: Mode,
          nonce: str, timeout: int = TIMEOUT) -> Answer:
    """The pool's answer, or :class:`DeployFailed` saying what went wrong and what to do."""
    where = f"{host}: PHP refresh (opcache-reset)"
    if result.status != 0:
        message, hint = _transport_failure(result, socket, release_dir, timeout)
        raise DeployFailed(f"{where}: {message}", hint=hint)
    headers = _first_headers(result.text)
    answers = _answer_lines(result.text, nonce)
    answer = answers[0] if answers else None
    if answer is None:
        raise DeployFailed(f"{where}: {_not_run(headers, result, socket)}",
                           hint=f"{_FIX_SOCKET}; the pool's user must be able to read "
                                f"{release_dir} (and the pool must not be chrooted)")
    if answer.state in _OK[mode]:
        if mode == "reset":
            settle = [a.state for a in answers[1:] if a.state in ("settled", "waiting")]
            return Answer(answer.state, answer.detail, bool(settle) and settle[-1] == "settled")
        return answer
    if answer.state == "refused":
        raise DeployFailed(
            f"{where}: the pool at {socket} refuses opcache_reset(): opcache.restrict_api "
            "limits the opcache functions to other scripts",
            hint="remove opcache.restrict_api from that pool (or make it cover the "
                 "releases), or use php.refresh: command with a graceful reload")
    if answer.state == "failed":
        raise DeployFailed(f"{where}: opcache_reset() returned false in the pool at {socket}",
                           hint="see the pool's error log; php.refresh: command with a "
                                "graceful reload works without opcache's API")
    raise DeployFailed(f"{where}: the pool at {socket} answered {_short(answer.state, 40)!r} "
                       f"to a {mode}", hint="deploy again; report it if it stays")


def _transport_failure(result: Result, socket: str, release_dir: str,
                       timeout: int) -> tuple[str, str]:
    reason = _short(result.tail(2)).removeprefix("forge-fastcgi: ")
    graceful = "or use php.refresh: command with a graceful reload"
    table: dict[int, tuple[str, str]] = {
        10: (f"no PHP-FPM socket at {socket}", f"{_FIX_SOCKET}; is PHP-FPM running?"),
        11: (f"the deploy user may not connect to {socket} (permission denied)",
             "let it connect (listen.owner, listen.group and listen.mode, or "
             f"listen.acl_users in the pool's config), {graceful}"),
        12: (f"nothing answers on {socket} (connection refused): PHP-FPM is stopped or "
             "restarting", "start PHP-FPM, then deploy again"),
        13: (f"cannot connect to {socket}: {reason}", _FIX_SOCKET),
        14: (f"PHP-FPM at {socket} did not answer within {timeout}s",
             f"every worker may be busy or stuck (see the pool's slow log); {graceful}"),
        15: (f"{socket} does not answer like PHP-FPM: {reason}", _FIX_SOCKET),
        16: (f"{socket} is not a socket", _FIX_SOCKET),
        20: (f"cannot write {posixpath.join(release_dir, SCRIPT)}: {reason}",
             "the deploy user must be able to write to its releases"),
        127: ("perl is not installed on the host; forge's FastCGI client needs it "
              "(Debian's and Ubuntu's essential package perl-base)",
              f"install perl-base, {graceful}"),
    }
    fallback = (f"the FastCGI request to {socket} failed (exit {result.status}): {reason}",
                _FIX_SOCKET)
    return table.get(result.status, fallback)


def _first_headers(text: str) -> dict[str, str]:
    """The CGI headers of the first answer (lower-case names)."""
    head, sep, _ = text.replace("\r\n", "\n").partition("\n\n")
    headers = {}
    for line in head.splitlines() if sep else ():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _answer_lines(text: str, nonce: str) -> list[Answer]:
    """forge's answer lines with this run's nonce, in order (several after a reset)."""
    out = []
    for line in text.replace("\r\n", "\n").splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == _PREFIX and parts[1] == nonce:
            out.append(Answer(parts[2], parts[3] if len(parts) > 3 else ""))
    return out


def _not_run(headers: dict[str, str], result: Result, socket: str) -> str:
    status = headers.get("status", "200 OK")
    said = _short(result.tail(2))
    if "Primary script unknown" in said:
        return (f"the pool at {socket} cannot find or read forge's script (Primary script "
                "unknown): it is not the pool serving this site, or its user cannot read "
                "the release")
    return (f"the pool at {socket} did not run forge's script (HTTP {status}"
            + (f": {said}" if said else "") + ")")


def _short(text: str, limit: int = 200) -> str:
    """One line of a remote message, bounded: it ends up in errors and summaries."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
