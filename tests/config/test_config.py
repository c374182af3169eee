"""forge.yml errors a user would meet: each names file, line, key, and what to do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from forge_ci.cli import main
from forge_ci.config import load, parse
from forge_ci.errors import ConfigError

GOOD = """\
version: 1
project: example-site
environments:
  production:
    url: https://example.com
    hosts: [{ host: 203.0.113.10, port: 22, user: deploy }]
    path: /srv/www/example.com
    shared: [".env", "web/app/uploads"]
    dotenv: { WP_ENV: production, DB_PASSWORD: "${DB_PASSWORD}" }
    backup:
      store: s3://bucket/prefix
      database: { name: example, user: example, password: "${DB_PASSWORD}" }
      retention: { keep_last: 7 }
  staging:
    path: /srv/www/staging
    hosts: [{ host: 203.0.113.11 }]
    dotenv: { DB_PASSWORD: "${STAGING_DB_PASSWORD}" }
"""
ENV = {"DB_PASSWORD": "hunter2-secret", "STAGING_DB_PASSWORD": "other-secret"}


def err(text: str, env: dict[str, str] | None = None, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, ENV if env is None else env, **kw)  # type: ignore[arg-type]
    return info.value


def test_valid_config_parses_and_records_secrets() -> None:
    loaded = parse(GOOD, ENV)
    prod = loaded.config.environments["production"]
    assert prod.dotenv["DB_PASSWORD"].get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" in loaded.secrets
    assert "hunter2-secret" not in repr(prod)


def test_typo_names_line_key_and_suggests_the_valid_key() -> None:
    e = err(GOOD.replace("shared:", "shraed:"))
    assert str(e).startswith("forge.yml:8: environments.production.shraed: unknown key")
    assert "did you mean 'shared'?" in str(e)


def test_nested_typo_in_a_list_item() -> None:
    e = err(GOOD.replace("port: 22", "prot: 22"))
    assert "forge.yml:6: environments.production.hosts[0].prot" in str(e)
    assert "'port'" in str(e)


def test_missing_variable_is_an_error_naming_it_not_an_empty_string() -> None:
    e = err(GOOD, env={"STAGING_DB_PASSWORD": "x"})
    assert "${DB_PASSWORD} is not set" in str(e)
    assert e.line == 9


def test_other_environments_variables_are_not_needed() -> None:
    loaded = parse(GOOD, {"STAGING_DB_PASSWORD": "x"}, environment="staging")
    assert loaded.config.environments["staging"].dotenv["DB_PASSWORD"].get_secret_value() == "x"
    with pytest.raises(ConfigError):
        parse(GOOD, {"STAGING_DB_PASSWORD": "x"}, environment="production")


def test_values_never_appear_in_messages() -> None:
    e = err(GOOD.replace("port: 22", "port: 99999").replace("hunter", "x"))
    assert "65535" in str(e)
    bad_url = GOOD.replace("url: https://example.com", 'url: "${DB_PASSWORD}"')
    e = err(bad_url)
    assert "hunter2-secret" not in str(e)
    assert "environments.production.url" in str(e)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("version: 1\n", ""), "required key 'version' is missing"),
        (("path: /srv/www/example.com", "path: srv/www"), "path must be absolute"),
        (("{ keep_last: 7 }", "{}"), "empty retention policy"),
        (('"web/app/uploads"', '"../etc"'), "must stay inside the site"),
        (
            ("project: example-site", "project: Example Site"),
            "project",
        ),
        (("production:\n", "production:\n    url: https://a\n"), "given twice"),
    ],
)
def test_rules(change: tuple[str, str], expect: str) -> None:
    assert expect in str(err(GOOD.replace(*change, 1)))


def test_broken_yaml_points_at_the_line() -> None:
    e = err(GOOD + "  bad: [\n")
    assert "not valid YAML" in str(e) and e.line is not None


def test_cli_exit_code_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "forge.yml"
    cfg.write_text(GOOD.replace("keep_releases", "x").replace("shared:", "sharde:"))
    code = main(["config", "check", "--config", str(cfg)], env=ENV)
    out = capsys.readouterr()
    assert code == 2
    assert f"{cfg}:8" in out.err and "Traceback" not in out.err


def test_unknown_environment_suggests(tmp_path: Path) -> None:
    cfg = tmp_path / "forge.yml"
    cfg.write_text(GOOD)
    loaded = load(cfg, ENV)
    with pytest.raises(ConfigError, match="did you mean 'production'"):
        loaded.environment("prodution")


# -- config check: every problem at once, secrets only where needed --------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bedrock" / "forge.yml"


def run_check(capsys: pytest.CaptureFixture[str], path: Path, *args: str,
              env: dict[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    code = main(["config", "check", *args, "--json", "--config", str(path)],
                env={} if env is None else env)
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_check_without_environment_reports_every_problem_and_needs_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "forge.yml"
    cfg.write_text(GOOD.replace("shared:", "shraed:")
                   .replace("path: /srv/www/staging", "path: /srv/www/staging\n"
                            "    keep_releases: three"))
    code, data, err = run_check(capsys, cfg)
    assert code == 2 and data["ok"] is False and data["exit_code"] == 2
    problems = data["problems"]
    assert isinstance(problems, list)
    keys = [p["key"] for p in problems]
    assert keys == ["environments.production.shraed", "environments.staging.keep_releases"]
    assert problems[0]["hint"] == "did you mean 'shared'?"
    assert "not set" not in err  # no secret was asked for
    assert "environments.staging.keep_releases" in err and "shraed" in err


def test_top_level_typo_is_an_unknown_key_not_a_missing_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "forge.yml"
    cfg.write_text(GOOD.replace("environments:", "enviroments:"))
    for args in ((), ("production",)):
        code, data, _ = run_check(capsys, cfg, *args)
        assert code == 2
        assert data["error"] == f"{cfg}:3: enviroments: unknown key 'enviroments'"
        assert data["hint"] == "did you mean 'environments'?"


def test_the_shipped_example_passes_with_no_secret_set_and_lists_them_as_notes(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, data, _ = run_check(capsys, EXAMPLE)
    assert code == 0 and data["ok"] is True
    assert set(data["environments"]) == {"local", "production"}  # type: ignore[arg-type]
    unset = data["unset"]
    assert isinstance(unset, list)
    assert {u["variable"] for u in unset} == {"DB_PASSWORD"}
    assert main(["config", "check", "--config", str(EXAMPLE)], env={}) == 0
    assert "note: " in capsys.readouterr().out


def test_check_of_one_environment_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = run_check(capsys, EXAMPLE, "production")
    assert code == 2 and data["ok"] is False
    assert "${DB_PASSWORD} is not set" in str(data["error"])
    code, data, _ = run_check(capsys, EXAMPLE, "local")  # local needs no variable
    assert code == 0 and list(data["environments"]) == ["local"]  # type: ignore[call-overload]
    code, _, _ = run_check(capsys, EXAMPLE, "production", env={"DB_PASSWORD": "pw-secret"})
    assert code == 0


def test_lenient_load_refuses_an_environment_whose_variables_are_unset() -> None:
    loaded = parse(GOOD, {}, lenient=True)
    with pytest.raises(ConfigError, match=r"\$\{DB_PASSWORD\} is not set"):
        loaded.environment("production")


# -- hostile YAML ------------------------------------------------------------------

def test_alias_bomb_is_refused_quickly() -> None:
    text = 'version: 1\nproject: x\na0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, 12):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    started = time.monotonic()
    e = err(text)
    assert "expands to more than" in str(e) and "aliases" in str(e)
    assert time.monotonic() - started < 5


def test_deep_nesting_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = err("version: 1\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than" in str(e)
    cfg = tmp_path / "forge.yml"
    cfg.write_text("version: 1\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    assert main(["config", "check", "--config", str(cfg)], env={}) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("link", ["current", "releases", "shared", ".forge", "releases/x",
                                  "current.forge-tmp"])
def test_preview_link_may_not_be_a_name_forge_uses(link: str) -> None:
    text = GOOD.replace("    path: /srv/www/example.com\n",
                        "    path: /srv/www/example.com\n"
                        f"    preview: {{url: 'https://next.example.com', link: '{link}'}}\n")
    e = err(text)
    assert e.key is not None and e.key.startswith("environments.production.preview.link")
    assert parse(text.replace(f"link: '{link}'", "link: next"), ENV)


def test_build_env_may_not_name_forges_own_secrets() -> None:
    e = err(GOOD.replace("environments:", "build: {env: [NPM_TOKEN, FORGE_SSH_KEY]}\n"
                                          "environments:"))
    assert e.key == "build.env" and "FORGE_SSH_KEY" in str(e)
    assert parse(GOOD.replace("environments:", "build: {env: [NPM_TOKEN]}\nenvironments:"),
                 ENV).config.build.env == ("NPM_TOKEN",)
