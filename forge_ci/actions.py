"""The Python side of forge's composite actions: check inputs, then run ``forge-ci``.

Each action (``actions/<name>/action.yml``) has one step that runs
``python -m forge_ci.actions <name>`` in forge's cached virtualenv. Its inputs arrive
as ``INPUT_*`` environment variables — never spliced into shell code — and are
validated here before they become an argv for ``forge-ci``, run as a child process
with an explicit environment and working directory (this process's own are left alone).

Two more variables are read here:

``FORGE_ENV``
    Extra ``NAME=value`` lines (the reusable workflows' ``env`` secret) for the
    ``${VAR}``\\s of forge.yml. Each value is masked before anything else is
    printed, then given to forge-ci's environment only; the raw blob is removed.
``AWS_ROLE_ARN``
    With the job's OIDC token available (``permissions: id-token: write``), the
    token is written to a 0600 file and the S3 store assumes the role itself
    (``AWS_WEB_IDENTITY_TOKEN_FILE``): no long-lived AWS key in the repository.

Errors in inputs exit 2 (bad usage) with an ``::error::`` naming the input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from forge_ci import gha
from forge_ci.errors import ExitCode

Environ = MutableMapping[str, str]

_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z")

# Names an ``env`` line may not set: they change how the runner, the shell or the
# interpreter behave, or they are the job's own identity.
_RESERVED = frozenset({"PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "CDPATH", "PWD",
                       "CI", "NODE_OPTIONS", "FORGE_ENV", "FORGE_PYTHON"})
_RESERVED_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_", "LD_", "DYLD_", "PYTHON",
                      "BASH_FUNC_")


# A secret or input the caller did not give arrives as an empty string; libraries
# (boto3 above all: AWS_REGION="" is a region) and forge.yml's ${VAR}s must see these
# as unset. Every variable the reusable workflows hand to a forge step is here
# (tests/actions/test_workflows.py checks it).
UNSET_IF_EMPTY = ("FORGE_SSH_KEY", "FORGE_KNOWN_HOSTS", "FORGE_BACKUP_RECIPIENT",
                  "FORGE_BACKUP_SIGNING_KEY", "FORGE_BACKUP_IDENTITY", "FORGE_ADMIN_SSH_KEY",
                  "HCLOUD_TOKEN", "HCLOUD_ENDPOINT",
                  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL",
                  "CYBERPANEL_URL", "CYBERPANEL_USER", "CYBERPANEL_PASSWORD",
                  "CPANEL_URL", "CPANEL_USER", "CPANEL_TOKEN")


class InputError(Exception):
    """An action input (or ``env`` line) is invalid; the message names it, never a value."""


@dataclass(frozen=True)
class Inputs:
    """The validated inputs every action shares plus the action's own (strings)."""

    environment: str
    config: str
    working_directory: Path
    extra: dict[str, str]


def _get(environ: Environ, name: str) -> str:
    return environ.get(f"INPUT_{name.upper().replace('-', '_')}", "").strip()


def _text(environ: Environ, name: str, *, default: str = "") -> str:
    value = _get(environ, name) or default
    if any(c in value for c in "\0\n\r"):
        raise InputError(f"input {name!r} must be a single line")
    return value


def _bool(environ: Environ, name: str, default: bool) -> bool:
    value = _get(environ, name).lower()
    if not value:
        return default
    if value in ("true", "false"):
        return value == "true"
    raise InputError(f"input {name!r} must be true or false")


def _ident(environ: Environ, name: str, what: str) -> str:
    value = _text(environ, name)
    if value and not _ID.match(value):
        raise InputError(f"input {name!r} is not a valid {what} "
                         "(letters, digits, '.', '_', ':', '-'; as forge-ci prints it)")
    return value


def _common(environ: Environ) -> Inputs:
    environment = _text(environ, "environment")
    if not environment:
        raise InputError("input 'environment' is required (a name from forge.yml)")
    if not _ENV_NAME.match(environment):
        raise InputError("input 'environment' must be a forge.yml environment name "
                         "(letters, digits, '.', '_', '-'; at most 64)")
    config = _text(environ, "config", default="forge.yml")
    if config.startswith("-"):
        raise InputError("input 'config' must be a path to forge.yml")
    wd = Path(_text(environ, "working-directory", default="."))
    if not wd.is_dir():
        raise InputError("input 'working-directory' is not a directory in the workspace")
    return Inputs(environment=environment, config=config, working_directory=wd, extra={})


# -- one argv list per forge-ci command an action runs ---------------------------

Plan = Callable[[Environ, Inputs], list[list[str]]]


def _deploy(environ: Environ, i: Inputs) -> list[list[str]]:
    argv = ["deploy", i.environment, f"--config={i.config}"]
    artifact = _text(environ, "artifact")
    if artifact:
        if not (i.working_directory / artifact).is_dir():
            raise InputError("input 'artifact' is not a directory (a `forge-ci build` output)")
        argv.append(f"--artifact={artifact}")
    return [argv]


def _rollback(environ: Environ, i: Inputs) -> list[list[str]]:
    argv = ["rollback", i.environment, f"--config={i.config}"]
    release = _ident(environ, "release", "release id")
    if release:
        argv.append(f"--to={release}")
    return [argv]


def _backup(environ: Environ, i: Inputs) -> list[list[str]]:
    runs = [["backup", i.environment, f"--config={i.config}"]]
    if _bool(environ, "verify", False):
        runs.append(["verify", i.environment, f"--config={i.config}"])
    if _bool(environ, "prune", False):
        runs.append(["prune", i.environment, f"--config={i.config}"])
    return runs


def _restore(environ: Environ, i: Inputs) -> list[list[str]]:
    snapshot = _ident(environ, "snapshot", "snapshot id")
    if _text(environ, "confirm") != i.environment:
        raise InputError("restore overwrites the live site: set input 'confirm' to the "
                         f"environment's name ({i.environment}) to go ahead")
    argv = ["restore", i.environment, f"--config={i.config}", "--yes"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    return [argv]


def _provision(environ: Environ, i: Inputs) -> list[list[str]]:
    argv = ["provision", i.environment, f"--config={i.config}"]
    if _bool(environ, "no-wait", False):
        argv.append("--no-wait")
    return [argv]


def _monitor(environ: Environ, i: Inputs) -> list[list[str]]:
    argv = ["monitor", i.environment, f"--config={i.config}"]
    state = _text(environ, "state")
    if state:
        if state.startswith("-") or "\0" in state:
            raise InputError("input 'state' must be a file path")
        argv.append(f"--state={state}")
    last = _text(environ, "last-activity")
    if last:
        if not _WHEN.match(last):
            raise InputError("input 'last-activity' must be a time like `git log -1 "
                             "--format=%cI` prints, or Unix seconds")
        argv.append(f"--last-activity={last}")
    fail_on = _text(environ, "fail-on", default="critical")
    if fail_on not in _FAIL_ON:
        raise InputError("input 'fail-on' must be one of: critical, warning, never")
    i.extra["fail-on"] = fail_on
    return [argv]


def _drill(environ: Environ, i: Inputs) -> list[list[str]]:
    return [["drill", i.environment, f"--config={i.config}"]]


# fail-on -> the monitor exit codes that fail the step
_FAIL_ON = {"critical": {ExitCode.MONITOR_CRITICAL},
            "warning": {ExitCode.MONITOR_WARNING, ExitCode.MONITOR_CRITICAL},
            "never": set()}
_WHEN = re.compile(r"[0-9][0-9T:.+Z-]{0,39}\Z")


def _sync(environ: Environ, i: Inputs) -> list[list[str]]:
    source = _text(environ, "from")
    if not source or not _ENV_NAME.match(source):
        raise InputError("input 'from' must be a forge.yml environment name (the source)")
    argv = ["sync", source, i.environment, f"--config={i.config}"]
    parts = _text(environ, "parts", default="all")
    if parts not in ("all", "database", "uploads"):
        raise InputError("input 'parts' must be all, database or uploads")
    if parts != "all":
        argv.append(f"--{parts}")
    snapshot = _ident(environ, "snapshot", "snapshot id")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    confirm = _text(environ, "confirm")
    if confirm:
        if confirm != i.environment:
            raise InputError("input 'confirm' must repeat the target environment's name "
                             f"({i.environment}) or be empty")
        argv.append(f"--confirm={confirm}")
    if _bool(environ, "dry-run", False):
        argv.append("--dry-run")
    return [argv]


ACTIONS: dict[str, Plan] = {
    "deploy": _deploy,
    "rollback": _rollback,
    "backup": _backup,
    "restore": _restore,
    "provision": _provision,
    "monitor": _monitor,
    "drill": _drill,
    "sync": _sync,
}


def plan(action: str, environ: Environ) -> tuple[Inputs, list[list[str]]]:
    """Validate ``env``'s inputs for ``action``; return them and the forge-ci argvs."""
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    inputs = _common(environ)
    return inputs, ACTIONS[action](environ, inputs)


# -- FORGE_ENV: extra NAME=value lines -------------------------------------------

def parse_env_lines(text: str) -> dict[str, str]:
    """Parse ``NAME=value`` lines. Blank lines and ``#`` comments are skipped.

    The value is everything after the first ``=``, taken literally (no quotes, no
    ``$`` expansion). Errors name the line number and the variable, never a value.
    """
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _VAR.match(name):
            raise InputError(f"env line {n}: expected NAME=value with NAME of letters, "
                             "digits and '_'")
        if name in _RESERVED or name.startswith(_RESERVED_PREFIXES):
            raise InputError(f"env line {n}: {name} cannot be set through env "
                             "(it changes the runner, shell or interpreter)")
        if name in out:
            raise InputError(f"env line {n}: {name} is given twice")
        out[name] = value
    return out


def export_env_lines(environ: Environ, runner: gha.Runner) -> list[str]:
    """Move ``FORGE_ENV``'s variables into ``env``, masking every value first."""
    text = environ.pop("FORGE_ENV", "")
    parsed = parse_env_lines(text)
    for value in parsed.values():
        runner.mask(value)
    for name, value in parsed.items():
        if environ.get(name) and environ[name] != value:
            raise InputError(f"env: {name} is also set in the step's environment; "
                             "give it in one place")
        environ[name] = value
    return sorted(parsed)


# -- AWS through OIDC --------------------------------------------------------------

def oidc_aws(environ: Environ, runner: gha.Runner, *, timeout: float = 10.0) -> bool:
    """With ``AWS_ROLE_ARN`` set, fetch the job's OIDC token for the S3 store to assume the role.

    Returns True when a token file was written. Static keys, if also given, win:
    the S3 store prefers them, so the token is not requested.
    """
    role = environ.get("AWS_ROLE_ARN", "").strip()
    if (not role or environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
            or environ.get("AWS_ACCESS_KEY_ID")):
        return False
    if not _ROLE_ARN.match(role):
        raise InputError("aws-role-arn is not an IAM role ARN (arn:aws:iam::123456789012:role/…)")
    url = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    token = environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not token:
        raise InputError("aws-role-arn is set but this job cannot request an OIDC token: "
                         "grant it `permissions: id-token: write`")
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise InputError("ACTIONS_ID_TOKEN_REQUEST_URL is not an http(s) URL")
    sep = "&" if "?" in url else "?"
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        f"{url}{sep}{urllib.parse.urlencode({'audience': 'sts.amazonaws.com'})}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - checked above
            jwt = str(json.load(resp)["value"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"could not get the job's OIDC token ({e.__class__.__name__}); "
                         "is `id-token: write` granted?") from None
    runner.mask(jwt)
    folder = environ.get("RUNNER_TEMP") or tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="forge-oidc-", dir=folder)  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(jwt)
    environ["AWS_WEB_IDENTITY_TOKEN_FILE"] = path
    run = f"{environ.get('GITHUB_RUN_ID', 'local')}-{environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    environ.setdefault("AWS_ROLE_SESSION_NAME", f"forge-{run}")
    return True


# -- entry point -------------------------------------------------------------------

Forge = Callable[[Sequence[str], Mapping[str, str], Path], int]


def forge_ci(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> int:
    """Run ``forge-ci argv`` as a child process with exactly ``environ``, in ``cwd``.

    A process of its own, so nothing here changes this interpreter's directory or
    environment, and the child sees the OIDC token file exported for it.
    """
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-I", "-m", "forge_ci", *argv], cwd=cwd,
                          env=dict(environ), check=False).returncode


def run(action: str, environ: Mapping[str, str], *, forge: Forge = forge_ci) -> int:
    """Run ``action`` with inputs from ``environ`` (not changed: forge gets a copy)."""
    child: Environ = dict(environ)
    runner = gha.Runner.from_env(child)
    for name in UNSET_IF_EMPTY:
        if name in child and not child[name].strip():
            del child[name]
    try:
        names = export_env_lines(child, runner)
        inputs, argvs = plan(action, child)
        oidc_aws(child, runner)
    except InputError as e:
        runner.error(str(e), title=f"forge {action}")
        return ExitCode.USAGE
    if names:
        runner.log(f"env: exported {', '.join(names)} (values masked)")
    for argv in argvs:
        runner.log(f"$ forge-ci {' '.join(argv)}")
        code = forge(argv, child, inputs.working_directory)
        if action == "monitor" and code in (ExitCode.MONITOR_WARNING, ExitCode.MONITOR_CRITICAL):
            # The report and notifications are out; whether the step fails is the caller's.
            return code if code in _FAIL_ON[inputs.extra["fail-on"]] else 0
        if code != 0:
            return code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(f"usage: python -m forge_ci.actions {{{','.join(ACTIONS)}}}", file=sys.stderr)
        return ExitCode.USAGE
    return run(args[0], os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
