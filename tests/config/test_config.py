"""forge.yml errors a user would meet: each names file, line, key, and what to do."""

from __future__ import annotations

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
