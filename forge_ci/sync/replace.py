"""Rewrite one database value from FROM's URLs to TO's, keeping PHP able to read it.

The rules, in the order a user can check them by hand:

**Pairs.** :meth:`Rules.from_pairs` takes ordered ``(from, to)`` pairs. A pair whose
FROM is an ``http://`` or ``https://`` URL made of a host (optional ``:port``) and an
optional path is a *URL pair*; its TO must be such a URL too. Any other pair is a
*literal pair*: its FROM bytes (UTF-8) become its TO bytes wherever they occur.
A trailing ``/`` on either URL is ignored.

**URL forms.** For a URL pair ``https://example.com`` → ``https://staging.example.com``
each of these forms of FROM is rewritten, in the same form:

==========================  =====================================================
form                        becomes
==========================  =====================================================
``https://example.com``     ``https://staging.example.com``
``http://example.com``      ``https://staging.example.com`` (rule below)
``//example.com``           ``//staging.example.com`` (protocol-relative stays so)
``https:\\/\\/example.com``   JSON-escaped: ``https:\\/\\/staging.example.com``
``\\/\\/example.com``         ``\\/\\/staging.example.com``
``https%3A%2F%2Fexample.com`` URL-encoded: ``https%3A%2F%2Fstaging.example.com``
``%2F%2Fexample.com``       ``%2F%2Fstaging.example.com``
==========================  =====================================================

*Scheme rule*: FROM matches with either scheme (``http`` or ``https``), and a match that
carries a scheme always gets TO's scheme; a match without one (protocol-relative) stays
without. In URL-encoded form the escapes match in either case (``%3a%2f``) and are
written in upper case. Slashes (and a port's colon) inside FROM's path are encoded the
same way as the form's scheme separator.

*Boundary rule*: FROM's host is matched only right after ``//`` (or its escaped form),
so ``myexample.com`` never matches, and only when the next byte does not continue a
host name or path segment: not a letter, digit, ``_`` or ``-``, and not a ``.``
followed by a letter or digit. So ``example.com.au`` and ``example.com-old`` stay, while
``https://example.com/page``, ``https://example.com.`` (end of a sentence),
``https://example.com:8080`` and ``"https://example.com"`` are rewritten. Matching is
case-sensitive, as WordPress stores its own URLs in lower case. A bare host without
``//`` (``user@example.com``) is not a URL form and stays; add a literal pair for it.

*One pass*: every value is scanned once, left to right; at each position the first pair
(in the given order) that matches wins, and replaced text is never scanned again, so a
TO that contains FROM (``example.com`` → ``staging.example.com``) cannot loop.

**PHP-serialized values.** A value that *looks serialized* (it starts with ``a:N:{``,
``O:N:"``, ``C:N:"``, ``E:N:"``, ``s:N:"``, ``i:N;``, ``d:…;``, ``b:0;``/``b:1;`` or
``N;``) is parsed exactly, byte lengths included, and must end where the parse ends.
Inside it:

- every string value is rewritten as a value of its own (so a string holding
  serialized data is parsed and rewritten recursively, and a string holding JSON or text
  gets the URL forms above); its ``s:N:`` length is recomputed in bytes;
- array keys and object property names are identifiers and are never rewritten (a
  rewritten key could collide with another); class names are never rewritten;
- ``O:`` objects are rewritten as data whatever the class (it need not be loaded):
  public, ``\\0*\\0protected`` and ``\\0Class\\0private`` properties alike;
- a ``C:`` (custom ``Serializable``) payload is rewritten as a string and its length
  recomputed; as ``ArrayObject``, ``ArrayIterator`` and ``SplObjectStorage`` write their
  payload as serialized values between markers (``x:i:0;a:1:{…};m:a:0:{}``), each
  serialized value found at the start or after one of ``: ; , { }`` is rewritten as
  serialized data (lengths kept right), and the text between them as text;
- ``E:`` enum cases, numbers, booleans, ``N;`` and ``r:``/``R:`` references are copied
  as they are.

A value that looks serialized but does not parse exactly is returned untouched with
:attr:`Status.UNPARSABLE`, never rewritten as text (that is how lengths get broken). A
string *inside* serialized data that looks serialized but does not parse is ordinary
text: rewriting it cannot break the outer value, whose lengths are recomputed.

A value holding none of the *needles* (each URL pair's host, each literal FROM) is
returned at once without being parsed: the fast path the dump rewriter relies on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forge_ci.errors import ConfigError

_URL = re.compile(r"(https?)://([A-Za-z0-9.-]+(?::[0-9]+)?)(/[^\s?#]*)?")
# Does not continue a host name or a path segment.
_BOUNDARY = rb"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"

_LOOKS_SERIALIZED = re.compile(
    rb'(?:a:[0-9]+:\{|[OCEs]:[0-9]+:"|i:[+-]?[0-9]+;|d:[^;]*;|b:[01];|N;)'
)
# One token of serialized data; which group matched (``lastindex``) tells its kind.
_TOKEN = re.compile(
    rb's:([0-9]+):"'  # _STRING: its length
    rb"|a:([0-9]+):\{"  # _ARRAY: its count
    rb"|(i:[+-]?[0-9]+;)"  # _INT (an array key may be one)
    rb"|(\})"  # _CLOSE
    rb'|([OCE]):([0-9]+):"'  # _NAMED: the kind, then the name's length
    rb"|(?:d:(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|NAN|-?INF)"
    rb"|b:[01]|N|[rR]:[0-9]+);"  # no group: other scalars
)
_STRING, _ARRAY, _INT, _CLOSE, _NAMED = 1, 2, 3, 4, 6
_COUNT = re.compile(rb'":([0-9]+):\{')
# The longest scheme and separator before a host: ``https%3A%2F%2F``.
_LEAD = len(b"https%3A%2F%2F")
# Where a serialized value may start inside a C: payload.
_IN_PAYLOAD = re.compile(rb"(?:^|(?<=[:;,{}]))(?=" + _LOOKS_SERIALIZED.pattern + rb")")


class Status(enum.Enum):
    """What :meth:`Rules.rewrite_value` did with a value."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"
    UNPARSABLE = "unparsable"  # looked serialized, did not parse: returned untouched


class _Unparsable(Exception):
    """Serialized data that does not parse exactly (internal)."""


@dataclass(frozen=True)
class _Target:
    with_scheme: bytes  # what a match carrying a scheme becomes
    without_scheme: bytes  # what a protocol-relative match becomes


@dataclass(frozen=True)
class Rules:
    """Compiled replacement rules: immutable, so one instance serves a whole dump."""

    pattern: re.Pattern[bytes]
    needles: re.Pattern[bytes]
    targets: tuple[_Target, ...]  # by regex group number - 1
    reach: int  # no match starts more than _LEAD before a needle or ends REACH after it
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[tuple[str, str]], encode: Callable[[bytes], bytes] | None = None
    ) -> Rules:
        """Compile ordered pairs (see the module docstring); ConfigError on a bad pair.

        ENCODE (see :meth:`encoded`) is applied to every literal piece of the patterns
        and to every replacement.
        """
        enc = encode or _same
        if not pairs:
            raise ConfigError(
                "sync has no replacement pairs", hint="give at least FROM's and TO's home URL"
            )
        alternatives: list[bytes] = []
        targets: list[_Target] = []
        needles: list[bytes] = []
        reach = 0
        for old, new in pairs:
            if not old:
                raise ConfigError("a sync.replace pair has an empty FROM", hint="remove it")
            if _URL.fullmatch(old):
                for alt, target in _url_forms(old, new, enc):
                    alternatives.append(alt)
                    targets.append(target)
                needles.append(_host(old))
                reach = max(reach, 3 * len(old.encode()))
            else:
                literal = enc(old.encode())
                alternatives.append(re.escape(literal))
                targets.append(_Target(enc(new.encode()), enc(new.encode())))
                needles.append(literal)
                reach = max(reach, len(literal))
        pattern = re.compile(b"|".join(b"(" + alt + b")" for alt in alternatives))
        unique = sorted(set(needles), key=len, reverse=True)
        return cls(
            pattern=pattern,
            needles=re.compile(b"|".join(re.escape(n) for n in unique)),
            targets=tuple(targets),
            reach=reach,
            pairs=tuple(pairs),
        )

    def encoded(self, encode: Callable[[bytes], bytes]) -> Rules:
        """The same rules for :meth:`rewrite_text` on text kept ENCODED, such as an SQL
        string literal's escaped content, so it needs no decoding. Sound only for an
        encoding that maps each byte on its own, leaves URL characters (letters,
        digits, ``. - _ : / %``) as they are and writes every other byte it changes as
        a sequence starting with a byte that is none of them (so the boundary rule sees
        the same verdict). Only ``rewrite_text`` applies: serialized data must be decoded.
        """
        return Rules.from_pairs(self.pairs, encode)

    def rewrite_value(self, value: bytes) -> tuple[bytes, Status]:
        """One column value, raw bytes as stored (no SQL escaping)."""
        if self.needles.search(value) is None:
            return value, Status.UNCHANGED
        if _LOOKS_SERIALIZED.match(value):
            try:
                new = self._serialized_exact(value)
            except (_Unparsable, RecursionError):
                return value, Status.UNPARSABLE
        else:
            new = self.rewrite_text(value)
        return new, (Status.UNCHANGED if new == value else Status.CHANGED)

    def rewrite_text(self, text: bytes) -> bytes:
        """The URL forms and literal pairs in plain text or JSON, in one pass.

        The same as ``pattern.sub`` over the whole text, but the full pattern (whose
        optional scheme gives the regex engine no literal to scan for) only runs in a
        window around each needle: every match holds a needle at most _LEAD bytes after
        its start, so the needles' literal search does the scanning. (PHP found the
        window's first version wrong: see test_window_cut_never_fakes_a_boundary.)
        """
        out: list[bytes] = []
        done = 0
        search, targets, reach = self.pattern.search, self.targets, self.reach + 2
        for needle in self.needles.finditer(text):
            at = needle.start()
            # Two bytes past the furthest end of a match that starts by AT, so the
            # boundary look-ahead sees real text; a match starting after AT is cut short
            # by this window and is left for its own needle's window.
            end = min(len(text), at + reach)
            while at >= done:
                match = search(text, max(done, at - _LEAD), end)
                if match is None or match.start() > at:
                    break
                begin = match.start()
                out.append(text[done:begin])
                target = targets[(match.lastindex or 1) - 1]  # one group per alternative
                # A match carrying a scheme starts with its "h".
                out.append(target.with_scheme if text[begin] == 104 else target.without_scheme)
                done = match.end()
        if not out:
            return text
        out.append(text[done:])
        return b"".join(out)

    # -- serialized data -------------------------------------------------------------

    def _serialized_exact(self, data: bytes) -> bytes:
        new, end = self._parse(data, 0)
        if end != len(data):
            raise _Unparsable
        return new

    def _inner(self, text: bytes) -> bytes:
        """A string inside serialized data: serialized again, or text."""
        if self.needles.search(text) is None:
            return text
        if _LOOKS_SERIALIZED.match(text):
            try:
                return self._serialized_exact(text)
            except _Unparsable:
                pass
        return self.rewrite_text(text)

    def _payload(self, payload: bytes) -> bytes:
        """A C: payload: the serialized values in it as data, the rest as text."""
        if self.needles.search(payload) is None:
            return payload
        out: list[bytes] = []
        text_start = pos = 0
        while (candidate := _IN_PAYLOAD.search(payload, pos)) is not None:
            start = candidate.start()
            try:
                new, end = self._parse(payload, start)
            except _Unparsable:
                pos = start + 1
                continue
            out.append(self.rewrite_text(payload[text_start:start]))
            out.append(new)
            text_start = pos = end
            if pos >= len(payload):
                break
        out.append(self.rewrite_text(payload[text_start:]))
        return b"".join(out)

    def _parse(self, data: bytes, start: int) -> tuple[bytes, int]:
        """The serialized value at START, checked exactly: (it rewritten, where it ends).

        One loop over tokens (one regex match each) with a stack of the members each
        open array or object still owes, not recursion: a deep value cannot overflow
        Python's stack. Nothing is copied token by token: the output is the input's
        unchanged stretches and the strings (and C: payloads) that changed, with their
        lengths recomputed. Only a string that a needle starts in is looked into.
        """
        token = _TOKEN.match
        search = self.needles.search
        found = search(data, start)
        near = len(data) if found is None else found.start()
        out: list[bytes] = []
        copied = pos = start
        stack: list[int] = []
        owed = -1  # members the innermost open array or object still owes; -1: none open
        while True:
            head = token(data, pos)
            if head is None:
                raise _Unparsable
            kind = head.lastindex
            if owed == 0:  # all members read: only its '}' may follow
                if kind != _CLOSE:
                    raise _Unparsable
                pos = head.end()
                owed = stack.pop()
                if owed < 0:
                    break
                continue
            is_key = False
            if owed > 0:
                is_key = not owed & 1  # members alternate key, value from an even count
                owed -= 1
            if kind == _STRING:
                begin = head.end()
                end = begin + int(head.group(_STRING))
                if data[end : end + 2] != b'";':
                    raise _Unparsable
                pos = end + 2
                if near < begin:  # a needle in the syntax before (a literal pair's)
                    found = search(data, begin)
                    near = len(data) if found is None else found.start()
                if near < end:
                    # Keys are identifiers, never rewritten.
                    if not is_key:
                        content = data[begin:end]
                        new = self._inner(content)
                        if new != content:
                            out.append(data[copied : head.start()])
                            out.append(b's:%d:"%b";' % (len(new), new))
                            copied = pos
                    found = search(data, pos)
                    near = len(data) if found is None else found.start()
            elif is_key:
                if kind != _INT:
                    raise _Unparsable
                pos = head.end()
            elif kind == _ARRAY:
                stack.append(owed)
                owed = 2 * int(head.group(_ARRAY))
                pos = head.end()
                continue
            elif kind == _NAMED:
                members, pos, copied = self._named(data, head, copied, out)
                if members >= 0:  # an object: its members follow
                    stack.append(owed)
                    owed = members
                    continue
            elif kind == _CLOSE:
                raise _Unparsable
            else:  # a number, boolean, null or reference
                pos = head.end()
            if owed < 0:
                break
        out.append(data[copied:pos])
        return b"".join(out), pos

    def _named(
        self, data: bytes, head: re.Match[bytes], copied: int, out: list[bytes]
    ) -> tuple[int, int, int]:
        """``O:``, ``C:`` or ``E:`` at HEAD: (members an object owes or -1, pos, copied)."""
        pos = head.start()
        kind, name_end = head.group(_NAMED - 1), head.end() + int(head.group(_NAMED))
        if kind == b"E":
            if data[name_end : name_end + 2] != b'";':
                raise _Unparsable
            return -1, name_end + 2, copied
        body = _COUNT.match(data, name_end)
        if body is None:
            raise _Unparsable
        count = int(body.group(1))
        if kind == b"O":
            return 2 * count, body.end(), copied
        payload_end = body.end() + count
        if data[payload_end : payload_end + 1] != b"}":
            raise _Unparsable
        payload = data[body.end() : payload_end]
        new = self._payload(payload)
        if new != payload:
            out.append(data[copied:pos])
            out.append(b'%b":%d:{%b}' % (data[pos:name_end], len(new), new))
            copied = payload_end + 1
        return -1, payload_end + 1, copied


# -- URL pairs -----------------------------------------------------------------------


def _split(url: str, what: str) -> tuple[str, str]:
    """(scheme, host[:port][/path]) of a URL pair's side, without a trailing slash."""
    match = _URL.fullmatch(url)
    if match is None:
        raise ConfigError(
            f"sync.replace: {what} {url!r} is not an http(s) URL of a host and a path",
            hint="write it as https://host or https://host/path",
        )
    scheme, host, path = match.groups()
    return scheme, (host + (path or "")).rstrip("/")


def _host(url: str) -> bytes:
    _, rest = _split(url, "FROM")
    return rest.split("/", 1)[0].split(":", 1)[0].encode()


def _same(text: bytes) -> bytes:
    return text


def _url_forms(old: str, new: str, enc: Callable[[bytes], bytes]) -> list[tuple[bytes, _Target]]:
    _, old_rest = _split(old, "FROM")
    scheme, new_rest = _split(new, "TO")
    o, n, s = old_rest.encode(), new_rest.encode(), scheme.encode()
    plain = (
        rb"(?:https?:)?" + re.escape(enc(b"//" + o)) + _BOUNDARY,
        _Target(enc(s + b"://" + n), enc(b"//" + n)),
    )
    json_o = b"\\/\\/" + o.replace(b"/", b"\\/")
    json_n = n.replace(b"/", b"\\/")
    json = (
        rb"(?:https?:)?" + re.escape(enc(json_o)) + _BOUNDARY,
        _Target(enc(s + b":\\/\\/" + json_n), enc(b"\\/\\/" + json_n)),
    )
    enc_o = re.escape(o).replace(b"/", b"%2[Ff]").replace(b":", b"%3[Aa]")
    enc_n = n.replace(b"/", b"%2F").replace(b":", b"%3A")
    encoded = (
        rb"(?:https?%3[Aa])?%2[Ff]%2[Ff]" + enc_o + _BOUNDARY,
        _Target(enc(s + b"%3A%2F%2F" + enc_n), enc(b"%2F%2F" + enc_n)),
    )
    return [plain, json, encoded]
