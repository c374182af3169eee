"""Plugins through entry points: the example package (examples/plugins/forge-dirstore,
installed into the test venv by scripts/setup) is discovered and keeps the store
contract; broken plugins (made here as a throwaway dist-info on sys.path) are
reported clearly and break no other command; nothing is looked up at start-up."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import forge_ci.plugins as plugins
from forge_ci.cli import main
from forge_ci.plugins import API_VERSION, PluginError, find
from forge_ci.store import ObjectStore, open_store
from tests.store.test_contract import *  # noqa: F403 - the contract suite, run on dir://


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    """The contract suite's store: the example plugin's, opened by URL scheme."""
    with open_store(f"dir://{tmp_path}/store") as s:
        yield s


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args), env={"PATH": "/usr/bin:/bin"})
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_installed_example_plugin_is_discovered(capsys: pytest.CaptureFixture[str]) -> None:
    import forge_dirstore

    assert find("forge_ci.stores", "dir") is forge_dirstore
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["api_version"] == API_VERSION
    row = next(p for p in doc["plugins"] if p["name"] == "dir")
    assert row == {"name": "dir", "group": "forge_ci.stores", "value": "forge_dirstore",
                   "distribution": "forge-ci-dirstore", "version": "0.1.0", "api": 1,
                   "status": "ok", "message": ""}
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("dir "))
    assert line.split() == ["dir", "forge_ci.stores", "forge-ci-dirstore", "0.1.0", "1", "ok"]


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution with a plugin whose import raises and two for another API."""
    site = tmp_path / "site"
    info = site / "forge_broken-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: forge-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [forge_ci.stores]
        boom = forge_broken_boom:open

        [forge_ci.commands]
        hello = forge_broken_future:register

        hi = forge_good:register

        [forge_ci.providers]
        future = forge_broken_future:Provider
        good = forge_good:GoodProvider
        """))
    (site / "forge_good.py").write_text(textwrap.dedent("""\
        FORGE_PLUGIN_API = 1
        def register(sub, common):
            p = sub.add_parser("hi", parents=[common.json])
            p.set_defaults(func=lambda ctx: ctx.emit({"hi": "there"}, "hi there") or 0)
        class GoodProvider:
            name = "good"
            @classmethod
            def from_env(cls, config, environ, policy, log, *, site):
                made = cls()
                made.site = site
                return made
        """))
    (site / "forge_broken_boom.py").write_text("raise ImportError('needs libfoo 2')\n")
    (site / "forge_broken_future.py").write_text(textwrap.dedent("""\
        FORGE_PLUGIN_API = 99
        def register(sub, common):
            raise AssertionError("must not be called")
        class Provider:
            pass
        """))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_plugins_lists_broken_ones_with_a_clear_status(
        broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    rows = {p["name"]: p for p in json.loads(out)["plugins"]}
    assert rows["boom"]["status"] == "broken"
    assert "failed to load: ImportError: needs libfoo 2" in rows["boom"]["message"]
    assert rows["hello"]["status"] == "incompatible" and rows["hello"]["api"] == 99
    assert "targets plugin API 99; this forge-ci speaks 1" in rows["hello"]["message"]
    assert rows["dir"]["status"] == "ok"  # the good one is unaffected


def test_a_broken_store_plugin_is_a_clear_error_when_used(broken: Path) -> None:
    with pytest.raises(PluginError) as err:
        open_store("boom://somewhere")
    text = str(err.value)
    assert "plugin 'boom' (forge_ci.stores, from forge-broken 0.3)" in text
    assert "pip uninstall forge-broken" in text


def test_a_plugin_command_for_another_api_is_refused_clearly(
        broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "hello")
    assert code == 2
    assert "plugin 'hello'" in err and "targets plugin API 99" in err


def test_a_good_plugin_command_runs(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hi", "--json")
    assert code == 0 and json.loads(out)["hi"] == "there"


def test_a_provider_plugin_is_built_by_make_provider(broken: Path) -> None:
    from forge_ci.config.loader import parse
    from forge_ci.config.provision import ProvisionConfig
    from forge_ci.provision.policy import ProvisionPolicy
    from forge_ci.provision.providers import make_provider
    from forge_ci.provision.site import resolve

    forge = parse("version: 1\nproject: example\nenvironments:\n  production:\n"
                  "    path: /srv/www/example\nprovision: { provider: good }\n", {}).config
    config = forge.provision
    assert isinstance(config, ProvisionConfig)
    site = resolve(forge, "production", "forge.yml")
    made = make_provider(config, {}, ProvisionPolicy.from_config(config.wait), print, site=site)
    assert type(made).__name__ == "GoodProvider"
    assert made.site is site  # type: ignore[attr-defined]


def test_a_provider_plugin_name_is_accepted_by_config_only_when_installed(broken: Path) -> None:
    from forge_ci.config.provision import ProvisionConfig

    assert ProvisionConfig.model_validate({"provider": "future"}).provider == "future"
    known = "hetzner, ssh, cyberpanel, cpanel, future, good"
    with pytest.raises(ValueError, match=f"is not one of {known}"):
        ProvisionConfig.model_validate({"provider": "aws"})


def _local_site(root: Path) -> Path:
    src = root / "src"
    (src / "web").mkdir(parents=True)
    (src / "web" / "index.php").write_text("<?php echo 'example';\n")
    (src / "forge.yml").write_text(
        "version: 1\nproject: example\nenvironments:\n  local:\n"
        "    path: ../target\n    marker: false\n")
    return src / "forge.yml"


def test_deploy_works_with_broken_plugins_installed(
        broken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_site(tmp_path)
    code, out, err = run(capsys, "deploy", "local", "--config", str(config))
    assert code == 0, out + err
    assert (tmp_path / "target" / "current" / "web" / "index.php").exists()


def test_forge_own_commands_never_read_entry_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(group: str) -> list[object]:
        raise AssertionError(f"entry points of {group} read at start-up")

    monkeypatch.setattr(plugins, "entry_points", refuse)
    config = _local_site(tmp_path)
    code, out, err = run(capsys, "deploy", "local", "--config", str(config))
    assert code == 0, out + err
