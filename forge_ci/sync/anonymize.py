"""Scrub personal data out of a dump as it streams (``sync.anonymize: true``, the default).

The default set, for WordPress's tables under ``sync.table_prefix`` (``wp_``); a
table that is not in the dump is simply never met:

==============================  =========================================================
table                           what is scrubbed
==============================  =========================================================
``wp_users``                    ``user_email`` → ``user-<ID>@example.invalid``;
                                ``user_pass`` and ``user_activation_key`` → ``''``
                                (nobody logs in with production's password: set one in
                                an ``after_sync`` hook, ``wp user update 1 --user_pass=…``)
``wp_comments``                 a non-empty ``comment_author_email`` →
                                ``comment-<comment_ID>@example.invalid``
``wp_postmeta``, ``wp_usermeta``  the ``meta_value`` of WooCommerce's ``_billing_email``,
                                ``billing_email`` (→ ``order-<id>@example.invalid``),
                                ``_billing_phone``, ``_shipping_phone``,
                                ``billing_phone``, ``shipping_phone`` (→ ``''``)
``wp_wc_orders``                ``billing_email`` → ``order-<id>@example.invalid``
``wp_wc_order_addresses``       ``email`` → ``order-<order_id>@example.invalid``;
                                ``phone`` → ``''``
==============================  =========================================================

``.invalid`` is reserved (RFC 2606): mail to it can never be delivered. A NULL stays
NULL. The rules run on the stream, in the dump rewriter's row hook
(:class:`forge_ci.sync.sqldump.Scrub`), so no real address reaches TO even for a moment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forge_ci.sync.sqldump import quote, unquote

_EMAIL_META = frozenset({b"_billing_email", b"billing_email"})
_PHONE_META = frozenset({b"_billing_phone", b"_shipping_phone", b"billing_phone",
                         b"shipping_phone"})

# A meta INSERT none of whose rows can match is not cut into rows at all.
_META_KEYS = re.compile(rb"'_?(?:billing|shipping)_(?:email|phone)'")

Rule = Callable[[dict[str, bytes]], dict[str, bytes]]


def _email(kind: str, id_column: str) -> Callable[[dict[str, bytes]], bytes]:
    def make(row: dict[str, bytes]) -> bytes:
        ident = row.get(id_column, b"0").strip(b"'")
        return quote(f"{kind}-".encode() + ident + b"@example.invalid")

    return make


def _users(row: dict[str, bytes]) -> dict[str, bytes]:
    return {"user_email": _email("user", "ID")(row), "user_pass": b"''",
            "user_activation_key": b"''"}


def _comments(row: dict[str, bytes]) -> dict[str, bytes]:
    if unquote(row.get("comment_author_email", b"''")) in (None, b""):
        return {}
    return {"comment_author_email": _email("comment", "comment_ID")(row)}


def _meta(id_column: str) -> Rule:
    def rule(row: dict[str, bytes]) -> dict[str, bytes]:
        key = unquote(row.get("meta_key", b"NULL"))
        if key in _EMAIL_META and unquote(row.get("meta_value", b"NULL")) not in (None, b""):
            return {"meta_value": _email("order", id_column)(row)}
        if key in _PHONE_META and unquote(row.get("meta_value", b"NULL")) is not None:
            return {"meta_value": b"''"}
        return {}

    return rule


def _orders(row: dict[str, bytes]) -> dict[str, bytes]:
    if unquote(row.get("billing_email", b"NULL")) in (None, b""):
        return {}
    return {"billing_email": _email("order", "id")(row)}


def _addresses(row: dict[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if unquote(row.get("email", b"NULL")) not in (None, b""):
        out["email"] = _email("order", "order_id")(row)
    if unquote(row.get("phone", b"NULL")) is not None:
        out["phone"] = b"''"
    return out


@dataclass(frozen=True)
class Anonymizer:
    """The default rules for one table prefix: a :class:`forge_ci.sync.sqldump.Scrub`."""

    rules: dict[str, Rule]

    @classmethod
    def default(cls, prefix: str) -> Anonymizer:
        return cls({
            f"{prefix}users": _users,
            f"{prefix}comments": _comments,
            f"{prefix}postmeta": _meta("post_id"),
            f"{prefix}usermeta": _meta("user_id"),
            f"{prefix}wc_orders": _orders,
            f"{prefix}wc_order_addresses": _addresses,
        })

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self.rules)

    def touches(self, table: str, statement: bytes) -> bool:
        if table.endswith("meta"):
            return _META_KEYS.search(statement) is not None
        return table in self.rules

    def row(self, table: str, columns: Sequence[str], values: list[bytes]) -> list[bytes]:
        rule = self.rules.get(table)
        if rule is None:
            return values
        named = dict(zip(columns, values, strict=True))
        changes = {k: v for k, v in rule(named).items() if k in named}
        if not changes:
            return values
        return [changes.get(c, v) for c, v in zip(columns, values, strict=True)]
