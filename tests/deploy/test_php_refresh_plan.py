"""php.refresh as data: the config rules for opcache-reset, the command it sends,
and every answer a pool (or the lack of one) can give, turned into errors that say
what to do. The real pool is in tests/deploy/test_php_refresh.py."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import pytest

from forge_ci.config import parse as parse_config
from forge_ci.config.models import PhpConfig
from forge_ci.deploy import php_refresh
from forge_ci.deploy.php_refresh import Answer, parse, request_script
from forge_ci.errors import ConfigError, DeployFailed
from forge_ci.remote.base import Result

SOCK = "/run/php/php8.2-fpm.sock"
REL = "/srv/www/site/releases/20260101T000000Z-abcdef12"
NONCE = "0123456789abcdef0123456789abcdef"

YML = """\
version: 1
project: example-site
environments:
  production:
    hosts: [{ host: 203.0.113.10 }]
    path: /srv/www/site
    php: PHP
"""


def config_error(php: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(YML.replace("PHP", php), {})
    return str(info.value)


def test_opcache_reset_takes_a_socket_path() -> None:
    loaded = parse_config(YML.replace("PHP", f"{{ refresh: opcache-reset, fpm_socket: {SOCK} }}"),
                          {})
    php = loaded.config.environments["production"].php
    assert (php.refresh, php.fpm_socket) == ("opcache-reset", SOCK)


@pytest.mark.parametrize(
    ("php", "expect"),
    [
        ("{ refresh: opcache-reset }", "needs fpm_socket"),
        ("{ refresh: opcache-reset }", "fastcgi_pass"),
        (f"{{ refresh: none, fpm_socket: {SOCK} }}", "only used by refresh: opcache-reset"),
        ("{ refresh: opcache-reset, fpm_socket: 'unix:/run/php/x.sock' }", "'unix:' prefix"),
        ("{ refresh: opcache-reset, fpm_socket: run/php/x.sock }", "absolute path"),
        ("{ refresh: opcache-reset, fpm_socket: '127.0.0.1:9000' }", "TCP address"),
        ("{ refresh: opcache-reset, fpm_socket: /run/php/../x.sock }", "plain absolute path"),
        ("{ refresh: opcache-reset, fpm_socket: //run/x.sock }", "plain absolute path"),
        ("{ refresh: opcache-reset, fpm_socket: /run/php/ }", "plain absolute path"),
        ('{ refresh: opcache-reset, fpm_socket: "/run/a\\nb" }', "plain absolute path"),
        (f"{{ refresh: opcache-reset, fpm_socket: /{'s' * 107} }}", "107 bytes"),
        ("{ refresh: opcache }", "php.refresh"),
    ],
)
def test_config_rules(php: str, expect: str) -> None:
    assert expect in config_error(php)


def test_config_error_names_the_key_and_line() -> None:
    assert config_error("{ refresh: opcache-reset }").startswith(
        "forge.yml:7: environments.production.php:")


# -- the command sent to the host -----------------------------------------------

def test_the_request_writes_the_script_into_the_release_and_always_removes_it() -> None:
    script = request_script(SOCK, REL, f"reset {NONCE}", 30)
    assert f"f={REL}/.forge-php-refresh.php\n" in script
    assert f"perl - {SOCK} \"$f\" 'reset {NONCE}' 30\n" in script
    assert script.rstrip().endswith('rm -f -- "$f"\nexit $s')
    assert "trap 'rm -f -- \"$f\"; exit 129' HUP INT TERM" in script
    # The PHP travels in a quoted heredoc: nothing in it is expanded by the shell.
    assert "<<'FORGE_PHP_REFRESH_EOF'" in script and "$_SERVER['FORGE_PHP_REFRESH']" in script


def test_paths_with_odd_characters_are_quoted() -> None:
    script = request_script("/run/php/my pool.sock", "/srv/it's", "probe x", 5)
    assert "'/run/php/my pool.sock'" in script and "f='/srv/it'\"'\"'s/" in script


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl checks its own syntax")
def test_the_client_and_the_shell_parse() -> None:
    program = (resources.files("forge_ci.deploy") / "fastcgi.pl").read_text()
    done = subprocess.run(["perl", "-c", "-"], input=program, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["sh", "-n", "-c", request_script(SOCK, REL, "probe x")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("php") is None, reason="php -l checks the script's syntax")
def test_the_php_script_parses() -> None:
    path = resources.files("forge_ci.deploy") / "php_refresh.php"
    done = subprocess.run(["php", "-l", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_nothing_to_do_for_none_and_nothing_to_probe_but_opcache_reset() -> None:
    host = object()  # never touched
    assert php_refresh.refresh(host, PhpConfig(), REL) is None  # type: ignore[arg-type]
    assert php_refresh.probe(host, PhpConfig(), REL) is None  # type: ignore[arg-type]
    reset = PhpConfig(refresh="opcache-reset", fpm_socket=SOCK)
    # No release served (a failed first deploy moved current aside): nothing to reset.
    assert php_refresh.refresh(host, reset, None) is None  # type: ignore[arg-type]


# -- the pool's answers -----------------------------------------------------------

def answer(*states: str, nonce: str = NONCE) -> Result:
    """What fastcgi.pl prints: one CGI answer per request, one after the other."""
    out = "".join(f"Content-Type: text/plain\r\n\r\nforge-php-refresh {nonce} {state}\n"
                  for state in states)
    return Result(0, out.encode(), b"")


def read(result: Result, mode: php_refresh.Mode = "reset") -> Answer:
    return parse(result, "deploy@web1:22", SOCK, REL, mode, NONCE)


def failure(result: Result, mode: php_refresh.Mode = "reset") -> DeployFailed:
    with pytest.raises(DeployFailed) as info:
        read(result, mode)
    return info.value


@pytest.mark.parametrize("state", ["ready", "off"])
def test_probe_answers_that_let_the_deploy_go_on(state: str) -> None:
    assert read(answer(state), "probe") == Answer(state)


@pytest.mark.parametrize(
    ("states", "settled"),
    [
        (("reset", "settled"), True),
        (("reset", "waiting", "waiting", "settled"), True),
        (("pending", "settled"), True),
        (("off", "settled"), True),
        # Still waiting when the time ran out, or the settle requests failed: the
        # reset happened, and the health checks decide whether PHP caught up.
        (("reset", "waiting"), False),
        (("reset",), False),
    ],
)
def test_reset_answers_and_whether_the_restart_was_seen(
    states: tuple[str, ...], settled: bool
) -> None:
    assert read(answer(*states)) == Answer(states[0], settled=settled)


def test_a_reset_asks_again_until_settled_in_the_same_command() -> None:
    script = request_script(SOCK, REL, f"reset {NONCE}", 30,
                            (f"settle {NONCE}", f"forge-php-refresh {NONCE} settled", 10))
    assert (f"perl - {SOCK} \"$f\" 'reset {NONCE}' 30 'settle {NONCE}' "
            f"'forge-php-refresh {NONCE} settled' 10\n") in script


@pytest.mark.parametrize(
    ("status", "stderr", "message", "hint"),
    [
        (10, "connect: No such file or directory", f"no PHP-FPM socket at {SOCK}",
         "fastcgi_pass"),
        (11, "connect: Permission denied", "may not connect to", "listen.acl_users"),
        (12, "connect: Connection refused", "nothing answers on", "start PHP-FPM"),
        (13, "connect: Connection reset by peer", "Connection reset by peer", "fastcgi_pass"),
        (14, "no answer within 30s", "did not answer within 30s", "graceful reload"),
        (15, "the answer is not FastCGI", "does not answer like PHP-FPM", "fastcgi_pass"),
        (16, "not a socket", f"{SOCK} is not a socket", "fastcgi_pass"),
        (20, "sh: cannot create x: Permission denied", "cannot write", "write to its releases"),
        (127, "", "perl is not installed", "perl-base"),
        (1, "boom", "failed (exit 1): boom", "fastcgi_pass"),
    ],
)
def test_transport_failures_name_the_host_and_socket_and_say_what_to_do(
    status: int, stderr: str, message: str, hint: str
) -> None:
    e = failure(Result(status, b"", f"forge-fastcgi: {stderr}\n".encode()))
    assert e.message.startswith("deploy@web1:22: PHP refresh (opcache-reset): ")
    assert message in e.message and "forge-fastcgi:" not in e.message
    assert e.hint is not None and hint in e.hint


def test_a_pool_that_cannot_read_the_release() -> None:
    result = Result(0, b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n",
                    b"Primary script unknown")
    e = failure(result)
    assert "Primary script unknown" in e.message and "not the pool serving this site" in e.message
    assert e.hint is not None and REL in e.hint


def test_an_answer_from_something_else_is_not_taken() -> None:
    assert "HTTP 403 Forbidden" in failure(Result(
        0, b"Status: 403 Forbidden\r\n\r\nAccess denied.\n",
        b"Access to the script has been denied (see security.limit_extensions)")).message
    # Another request's answer (another nonce) does not count.
    assert "did not run forge's script" in failure(answer("reset", nonce="f" * 32)).message
    # A probe answer is not a reset.
    assert "answered 'ready' to a reset" in failure(answer("ready")).message


def test_refused_and_failed_resets() -> None:
    e = failure(answer("refused opcache.restrict_api"))
    assert "restrict_api" in e.message and e.hint is not None and "command" in e.hint
    assert "opcache_reset() returned false in the pool at" in failure(answer("failed")).message


def test_long_remote_messages_are_cut() -> None:
    e = failure(Result(13, b"", ("x" * 5000).encode()))
    assert len(e.message) < 400
