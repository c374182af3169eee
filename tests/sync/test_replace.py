"""The value rewriter: each URL form, each serialized shape, each edge; then PHP as oracle."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_ci.errors import ConfigError
from forge_ci.sync.replace import Rules, Status

from .php_oracle import Php

RULES = Rules.from_pairs([("https://example.com", "https://staging.example.com")])


def rewrite(value: bytes, rules: Rules = RULES) -> bytes:
    new, _ = rules.rewrite_value(value)
    return new


def ser(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b's:%d:"%b";' % (len(raw), raw)


# -- plain text and JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"https://example.com/page", b"https://staging.example.com/page"),
        (b"http://example.com/page", b"https://staging.example.com/page"),
        (b"<img src=//example.com/a.jpg>", b"<img src=//staging.example.com/a.jpg>"),
        (b'{"u":"https:\\/\\/example.com\\/x"}', b'{"u":"https:\\/\\/staging.example.com\\/x"}'),
        (b'{"u":"http:\\/\\/example.com"}', b'{"u":"https:\\/\\/staging.example.com"}'),
        (b'{"u":"\\/\\/example.com"}', b'{"u":"\\/\\/staging.example.com"}'),
        (b"r=https%3A%2F%2Fexample.com%2Fx", b"r=https%3A%2F%2Fstaging.example.com%2Fx"),
        (b"r=http%3a%2f%2fexample.com", b"r=https%3A%2F%2Fstaging.example.com"),
        (b"r=%2F%2Fexample.com", b"r=%2F%2Fstaging.example.com"),
        (b"Visit https://example.com.", b"Visit https://staging.example.com."),
        (b"https://example.com:8080/x", b"https://staging.example.com:8080/x"),
        (b'"https://example.com"', b'"https://staging.example.com"'),
        (b"https://example.com?p=1#top", b"https://staging.example.com?p=1#top"),
    ],
)
def test_each_url_form_is_rewritten_in_its_own_form(before: bytes, after: bytes) -> None:
    assert RULES.rewrite_value(before) == (after, Status.CHANGED)


@pytest.mark.parametrize(
    "text",
    [
        b"https://example.com.au/shop",
        b"https://myexample.com",
        b"https://example.com-old.net",
        b"https://example.company",
        b"https://sub.example.com",
        b"mail info@example.com",
        b"https://EXAMPLE.COM",
    ],
)
def test_hosts_that_only_contain_from_are_left_alone(text: bytes) -> None:
    assert RULES.rewrite_value(text) == (text, Status.UNCHANGED)


def test_a_value_without_any_needle_is_returned_as_the_same_object() -> None:
    value = b"a:1:{broken https://other.org"
    new, status = RULES.rewrite_value(value)
    assert new is value
    assert status is Status.UNCHANGED


def test_window_cut_never_fakes_a_boundary() -> None:
    # Found by the PHP oracle: a needle in no URL form ("example.com" alone) whose
    # search window ended right after a later URL form's host, so the look-ahead saw
    # the window's end instead of the letter that follows. 59 = 3 * len(FROM) + 2.
    first = b"example.com"
    later = b"https%3A%2F%2Fexample.com"
    text = first + b"-" * (59 - len(first) - len(later)) + later + b"Xtra"
    assert RULES.rewrite_value(text) == (text, Status.UNCHANGED)
    # The PHP serialized string inside two JSON encodings that showed it.
    shown = (
        b'"\\"s:77:\\\\\\"https:\\\\\\/\\\\\\/example.com\\\\\\/\\\\\\/example.com\\\\\\/'
        b'https%3A%2F%2Fexample.comhttps:\\\\\\/\\\\\\/example.com\\\\\\";\\""'
    )
    assert RULES.rewrite_value(shown) == (shown, Status.UNCHANGED)


def test_one_pass_so_a_to_that_contains_from_cannot_loop() -> None:
    rules = Rules.from_pairs([("https://example.com", "https://example.com.staging.test")])
    assert rewrite(b"https://example.com/x", rules) == b"https://example.com.staging.test/x"


def test_pairs_apply_in_order_and_literal_pairs_have_no_boundary() -> None:
    rules = Rules.from_pairs(
        [
            ("https://example.com/blog", "https://staging.example.com/news"),
            ("https://example.com", "http://staging.example.com"),
            ("Example Ltd", "Example Ltd (staging)"),
        ]
    )
    text = b"https://example.com/blog/a https://example.com/blogroll Example Ltd!"
    assert rewrite(text, rules) == (
        b"https://staging.example.com/news/a http://staging.example.com/blogroll "
        b"Example Ltd (staging)!"
    )
    assert rewrite(b"https:\\/\\/example.com\\/blog", rules) == (
        b"https:\\/\\/staging.example.com\\/news"
    )
    assert rewrite(b"https%3A%2F%2Fexample.com%2Fblog", rules) == (
        b"https%3A%2F%2Fstaging.example.com%2Fnews"
    )


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("https://example.com", "staging.example.com")],
        [("", "x")],
        [("https://example.com", "ftp://staging.example.com")],
    ],
)
def test_bad_pairs_are_refused_with_a_config_error(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(ConfigError):
        Rules.from_pairs(pairs)


# -- PHP-serialized ----------------------------------------------------------------------


def test_serialized_string_lengths_are_recomputed_in_bytes() -> None:
    value = ser("héllo https://example.com/ünï 日本")
    assert rewrite(value) == ser("héllo https://staging.example.com/ünï 日本")


def test_nested_arrays_keys_untouched_values_rewritten() -> None:
    value = (
        b'a:2:{s:19:"https://example.com";a:1:{i:0;'
        + ser("https://example.com/a")
        + b"}i:7;"
        + ser("x")
        + b"}"
    )
    assert rewrite(value) == (
        b'a:2:{s:19:"https://example.com";a:1:{i:0;'
        + ser("https://staging.example.com/a")
        + b"}i:7;"
        + ser("x")
        + b"}"
    )


def test_serialized_inside_serialized_is_rewritten_at_every_depth() -> None:
    innermost = b'a:1:{s:3:"url";' + ser("http://example.com/ü") + b"}"
    middle = b"a:1:{i:0;" + ser(innermost) + b"}"
    value = ser(middle)
    new_innermost = b'a:1:{s:3:"url";' + ser("https://staging.example.com/ü") + b"}"
    assert rewrite(value) == ser(b"a:1:{i:0;" + ser(new_innermost) + b"}")


def test_json_inside_serialized() -> None:
    value = b'a:1:{s:4:"data";' + ser('{"link":"https:\\/\\/example.com\\/p","n":1}') + b"}"
    assert rewrite(value) == (
        b'a:1:{s:4:"data";' + ser('{"link":"https:\\/\\/staging.example.com\\/p","n":1}') + b"}"
    )


def test_objects_of_unloaded_classes_keep_class_and_property_names() -> None:
    props = (
        ser("url")
        + ser("https://example.com")
        + ser(b"\x00*\x00home")
        + ser("//example.com/x")
        + ser(b"\x00Vendor\\Widget\x00secret")
        + ser("https:\\/\\/example.com")
    )
    value = b'O:13:"Vendor\\Widget":3:{' + props + b"}"
    assert rewrite(value) == (
        b'O:13:"Vendor\\Widget":3:{'
        + ser("url")
        + ser("https://staging.example.com")
        + ser(b"\x00*\x00home")
        + ser("//staging.example.com/x")
        + ser(b"\x00Vendor\\Widget\x00secret")
        + ser("https:\\/\\/staging.example.com")
        + b"}"
    )


def test_custom_serialized_payload_is_rewritten_with_its_length() -> None:
    payload = b"x:i:0;" + b"a:1:{i:0;" + ser("https://example.com") + b"};m:a:0:{}"
    value = b'C:11:"ArrayObject":%d:{%b}' % (len(payload), payload)
    new_payload = b"x:i:0;" + b"a:1:{i:0;" + ser("https://staging.example.com") + b"};m:a:0:{}"
    assert rewrite(value) == b'C:11:"ArrayObject":%d:{%b}' % (len(new_payload), new_payload)


def test_scalars_enums_and_references_are_copied() -> None:
    value = (
        b"a:8:{i:0;i:-5;i:1;d:0.1;i:2;d:1.0E+25;i:3;b:1;i:4;N;"
        b'i:5;E:11:"Suit:Hearts";i:6;r:1;i:7;' + ser("https://example.com") + b"}"
    )
    assert rewrite(value) == value.replace(
        ser("https://example.com"), ser("https://staging.example.com")
    )


@pytest.mark.parametrize(
    "value",
    [
        b'a:1:{i:0;s:3:"https://example.com";}',  # wrong length (a naive sed's work)
        b'a:2:{i:0;s:19:"https://example.com";}',  # wrong count
        b's:19:"https://example.com";trailing',  # data after the end
        b'a:1:{i:0;s:19:"https://example.com";',  # truncated
        b'O:4:"Foo":1:{s:1:"u";s:19:"https://example.com";}',  # class name length wrong
        b'C:3:"Bar":5:{https://example.com}',  # payload length wrong
    ],
)
def test_broken_serialized_is_left_untouched_and_reported(value: bytes) -> None:
    assert RULES.rewrite_value(value) == (value, Status.UNPARSABLE)


def test_a_broken_serialized_string_inside_good_data_is_text() -> None:
    broken = b'a:1:{i:0;s:3:"https://example.com";}'
    value = b"a:1:{i:0;" + ser(broken) + b"}"
    fixed = b'a:1:{i:0;s:3:"https://staging.example.com";}'
    assert RULES.rewrite_value(value) == (b"a:1:{i:0;" + ser(fixed) + b"}", Status.CHANGED)


def test_a_literal_pair_that_matches_serialized_syntax_hides_no_url_after_it() -> None:
    rules = Rules.from_pairs([("https://example.com", "https://staging.example.com"),
                              ("i:0", "i:zero")])
    value = (
        b"a:2:{i:0;" + ser("https://example.com") + b"i:1;" + ser("i:0 https://example.com") + b"}"
    )
    assert rules.rewrite_value(value) == (
        b"a:2:{i:0;" + ser("https://staging.example.com") + b"i:1;"
        + ser("i:zero https://staging.example.com") + b"}",
        Status.CHANGED,
    )


def test_text_that_merely_mentions_serialized_syntax_is_text() -> None:
    value = b"a: see https://example.com"
    assert RULES.rewrite_value(value) == (b"a: see https://staging.example.com", Status.CHANGED)


def test_deep_nesting_is_parsed_without_recursion() -> None:
    depth = 5000
    value = b"a:1:{i:0;" * depth + ser("https://example.com") + b"}" * depth
    expected = b"a:1:{i:0;" * depth + ser("https://staging.example.com") + b"}" * depth
    assert RULES.rewrite_value(value) == (expected, Status.CHANGED)


# -- PHP as the oracle ---------------------------------------------------------------------


FRAGMENTS = [
    "https://example.com",
    "http://example.com",
    "//example.com",
    "https:\\/\\/example.com",
    "http:\\/\\/example.com",
    "\\/\\/example.com",
    "https%3A%2F%2Fexample.com",
    "http%3a%2f%2fexample.com",
    "example.com",
    "https://example.com.au",
    "https://myexample.com",
    "https://example.com-old",
    "/wp-content/uploads/a.jpg",
    "\\/x",
    ".",
    "/",
    ":8080",
    "é",
    "日本語",
    "😀",
    "'",
    '"',
    "\\",
    "\x00",
    "\n",
    "a:1:{",
    's:3:"',
    ";",
    "}",
    " ",
]

# The URL forms (the first eight fragments) come up in most strings, not by chance.
text = st.lists(
    st.sampled_from(FRAGMENTS[:8]) | st.sampled_from(FRAGMENTS) | st.text(max_size=4),
    min_size=1,
    max_size=8,
).map("".join)
strings = text.map(lambda v: {"t": "str", "v": v})

scalars = st.one_of(
    strings,
    strings,
    strings,
    st.integers(-(2**63), 2**63 - 1).map(lambda v: {"t": "int", "v": v}),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: {"t": "float", "v": v}),
    st.booleans().map(lambda v: {"t": "bool", "v": v}),
    st.just({"t": "null"}),
)

prop_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)


def containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.integers(-3, 50) | st.text(alphabet="abcxyz_é", min_size=1, max_size=4)
    arrays = st.lists(st.tuples(keys, children), min_size=1, max_size=4).map(
        lambda items: {"t": "arr", "items": [list(i) for i in items]}
    )
    objects = st.builds(
        lambda cls, props: {
            "t": "obj",
            "class": cls,
            "props": [[vis, name, child] for name, (vis, child) in props.items()],
        },
        st.sampled_from(["Acme_Widget", "Vendor\\Builder\\Section", "stdClassLike"]),
        st.dictionaries(
            prop_names,
            st.tuples(st.sampled_from(["public", "protected", "private"]), children),
            max_size=3,
        ),
    )
    serialized = children.map(lambda c: {"t": "ser", "v": c})
    as_json = children.map(lambda c: {"t": "json", "v": c})
    return arrays | objects | serialized | as_json


trees = st.recursive(scalars, containers, max_leaves=20)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree=trees)
def test_php_reads_the_output_and_agrees_with_its_own_rewrite(
    php: Php, tree: dict[str, Any]
) -> None:
    source = base64.b64decode(php.ask({"op": "build", "tree": tree})["source"])
    output, status = RULES.rewrite_value(source)
    assert status is not Status.UNPARSABLE, source
    answer = php.check(source, output)
    assert answer["readable"], f"PHP cannot unserialize the output of {source!r}: {output!r}"
    assert output == base64.b64decode(answer["expected"])
    assert answer["equal"]
