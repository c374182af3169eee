"""A model of how vlucas/phpdotenv 5 (what Bedrock loads .env with) reads a file.

Written from that parser's documented behaviour and states, so tests can check a
.env without composer: the file is split at CR, LF or CRLF; a line holding
``="`` that does not also close its quote starts a multi-line value, joined
with LF until a line that closes it; each entry is then read by a small state
machine (unquoted, 'single', "double" with the escapes \\" \\\\ \\$ \\f \\n \\r
\\t \\v, anything else after a backslash an error). An unescaped ``$`` outside
single quotes marks a place where ``${NAME}`` is replaced by NAME's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# PHP's \s, trim() and ctype_space() know ASCII whitespace only.
WS = " \t\n\x0b\x0c\r"


class DotenvSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    value: str
    expands_at: tuple[int, ...]  # offsets of unescaped '$' (phpdotenv resolves ${NAME} there)

    def expands(self) -> bool:
        """Whether phpdotenv would substitute anything into this value."""
        return any(re.match(r"\$\{[A-Za-z0-9_.]+\}", self.value[i:]) for i in self.expands_at)


def _closes(line: str, started: bool) -> bool:
    if line == '"':
        return True
    stripped = line.replace("\\\\", "")
    count = len(re.findall(r'(?=[^\\]")', stripped))
    return count > 1 if started else count >= 1


def _entries(lines: list[str]) -> list[str]:
    out: list[str] = []
    multiline, buffer = False, []
    for line in lines:
        started = '="' in line and not _closes(line, True)
        if started:
            multiline = True
        if multiline:
            buffer.append(line)
            if _closes(line, started):
                multiline, line, buffer = False, "\n".join(buffer), []
        if not multiline and line.strip(WS + "\0") and not line.strip(WS + "\0").startswith("#"):
            out.append(line)
    if multiline:
        raise DotenvSyntaxError("a multi-line value never closes")
    return out


_TOKEN = re.compile(r"""[\r\n]+|[ \t\x0b\x0c]+|\\|'|"|\#|\$|[^ \t\n\x0b\x0c\r\\'"\#$]+""")


def _space(token: str) -> bool:
    return all(c in WS for c in token)
_ESCAPES = {"f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _value(raw: str) -> Entry:
    if not raw.strip(WS + "\0"):
        return Entry("", ())
    chars: list[str] = []
    marks: list[int] = []
    state = "initial"
    for token in _TOKEN.findall(raw):
        here = len("".join(chars))
        if state in ("initial", "unquoted"):
            if state == "initial" and token == "'":
                state = "single"
            elif state == "initial" and token == '"':
                state = "double"
            elif token == "#":
                state = "comment"
            elif state == "unquoted" and _space(token):
                state = "whitespace"
            else:
                if token == "$":
                    marks.append(here)
                chars.append(token)
                state = "unquoted"
        elif state == "single":
            if token == "'":
                state = "whitespace"
            else:
                chars.append(token)
        elif state == "double":
            if token == '"':
                state = "whitespace"
            elif token == "\\":
                state = "escape"
            else:
                if token == "$":
                    marks.append(here)
                chars.append(token)
        elif state == "escape":
            if token in ('"', "\\", "$"):
                chars.append(token)
            elif token[0] in _ESCAPES:
                chars.append(_ESCAPES[token[0]] + token[1:])
            else:
                raise DotenvSyntaxError(f"unexpected escape sequence before {token!r}")
            state = "double"
        elif state == "whitespace":
            if token == "#":
                state = "comment"
            elif not _space(token):
                raise DotenvSyntaxError("unexpected text after a closing quote")
    if state in ("single", "double", "escape"):
        raise DotenvSyntaxError("a missing closing quote")
    return Entry("".join(chars), tuple(marks))


def parse(text: str) -> dict[str, Entry]:
    """Every entry of ``text`` by name, as phpdotenv reads it (before ${...} resolution)."""
    out: dict[str, Entry] = {}
    for raw in _entries(re.split(r"\r\n|\n|\r", text)):
        if "=" not in raw:
            raise DotenvSyntaxError(f"no '=' in {raw!r}")
        name, value = (part.strip(WS + "\0") for part in raw.split("=", 1))
        if name.startswith("export") and len(name) > 8 and name[6] in WS:
            name = name[6:].lstrip()
        if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
            raise DotenvSyntaxError(f"invalid name {name!r}")
        out[name] = _value(value)
    return out
