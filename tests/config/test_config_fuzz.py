"""Property tests: whatever YAML a user writes, forge.yml parsing ends in a valid
config or a ConfigError that names a line; never a traceback."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_ci.config import parse
from forge_ci.errors import ConfigError

keys = st.sampled_from(["version", "project", "build", "environments", "local", "path", "hosts",
                        "host", "port", "user", "url", "dotenv", "health", "shared", "x", "backup"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000),
                    st.text(max_size=12), st.just("${NOPE}"), st.just("/srv/site"))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_any_mapping_parses_or_fails_clearly(doc: dict[str, object]) -> None:
    text = yaml.safe_dump(doc)
    try:
        parse(text, {"SET": "v"})
    except ConfigError as e:
        assert e.line is not None or "forge.yml" in str(e)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_clearly(text: str) -> None:
    try:
        parse(text, {})
    except ConfigError as e:
        assert str(e).startswith("forge.yml")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_secret_values_never_reach_messages(secret: str) -> None:
    text = ("version: 1\nproject: p\nenvironments:\n  e:\n    path: x\n"
            "    url: ${S}\n    keep_releases: ${S}\n")
    try:
        parse(text, {"S": "zz" + secret + "zz"})
    except ConfigError as e:
        assert "zz" + secret + "zz" not in str(e)
