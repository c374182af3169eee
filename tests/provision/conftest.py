"""Fixtures for provisioning: the fake Hetzner API, a site repository with a
``provision:`` section, and ``run`` to call ``forge-ci`` in-process the way a
workflow step would (GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files included).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab import leaks
from lab._proc import free_port
from lab.hetzner import HetznerFake
from lab.policy import lab_required
from lab.sshd import KeyPair, generate_ed25519
from lab.users import DEPLOY_USER

from forge_ci.cli import main
from tests.provision.server import Booter

FORGE_YML = """\
version: 1
project: example-site
environments:
  production:
    url: https://example.test
    path: /srv/www/example.test
  staging:
    path: /srv/www/staging.example.test
provision:
  provider: hetzner
  server_type: cx22
  image: ubuntu-24.04
  location: fsn1
  fallback_locations: [nbg1, hel1]
  fallback_server_types: [cx32]
  ssh_sources: [203.0.113.0/24, 2001:db8::/32]
  ssh_port: {port}
  deploy_user: {user}
  labels: {{ team: web }}
  wait: {{ poll_interval: 0, api_backoff: 0, api_retries: 3, action_timeout: 10, boot_timeout: 30 }}
"""

SERVER = "example-site-production"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str

    @property
    def json(self) -> Any:
        """The --json document (after any ::add-mask:: and ::group:: lines)."""
        lines = self.stdout.splitlines()
        start = lines.index("{")
        return json.loads("\n".join(lines[start:]))

    @property
    def everything(self) -> str:
        """All a log reader sees. ``::add-mask::`` lines are the runner's, never shown."""
        stdout = "\n".join(ln for ln in self.stdout.splitlines()
                           if not ln.startswith("::add-mask::"))
        return "\n".join([stdout, self.stderr, *self.outputs.values(), self.summary])


@dataclass
class Repo:
    root: Path
    fake: HetznerFake
    key: KeyPair
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "forge.yml"


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT: ``name=value`` lines and ``name<<DELIM`` blocks."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        name, sep, rest = line.partition("<<")
        if sep and "=" not in name:
            block = []
            for inner in lines:
                if inner == rest:
                    break
                block.append(inner)
            out[name] = "\n".join(block)
        else:
            key, _, value = line.partition("=")
            out[key] = value
    return out


@pytest.fixture
def fake() -> Iterator[HetznerFake]:
    with HetznerFake() as api:
        yield api


@pytest.fixture
def repo(tmp_path: Path, fake: HetznerFake) -> Repo:
    port = free_port()
    (tmp_path / "forge.yml").write_text(FORGE_YML.format(port=port, user=DEPLOY_USER))
    key = generate_ed25519("forge-deploy")
    env = {
        "HCLOUD_TOKEN": fake.token,
        "HCLOUD_ENDPOINT": fake.url,
        "FORGE_SSH_KEY": key.private,
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "github_summary"),
    }
    return Repo(root=tmp_path, fake=fake, key=key, port=port, env=env)


@pytest.fixture
def run(repo: Repo, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def call(*argv: str, env: dict[str, str] | None = None) -> Result:
        out_file = Path(repo.env["GITHUB_OUTPUT"])
        summary_file = Path(repo.env["GITHUB_STEP_SUMMARY"])
        for f in (out_file, summary_file):
            f.write_text("")
        capsys.readouterr()
        code = main([*argv, f"--config={repo.config}"], env={**repo.env, **(env or {})})
        captured = capsys.readouterr()
        outputs, summary = out_file.read_text(), summary_file.read_text()
        # The next call empties both files: check them now, not after the test.
        leaks.check(outputs + summary, "GITHUB_OUTPUT or step summary")
        return Result(code, captured.out, captured.err, parse_outputs(outputs), summary)

    return call


@pytest.fixture
def booter(fake: HetznerFake, repo: Repo) -> Iterator[Booter]:
    """Boots each server the fake creates: an sshd on its 127.x address and repo.port."""
    with lab_required():
        from lab._proc import require_binary, require_root

        require_root()
        require_binary("sshd")
        boot = Booter(fake, repo.port)
    yield boot
    boot.stop()
    assert not boot.errors, boot.errors
