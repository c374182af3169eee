"""Read forge.yml: YAML with line numbers, ``${VAR}`` from the environment, validation.

Every error is a :class:`ConfigError` naming the file, the key path and the line,
with a hint (the nearest valid key for a typo). No value from the environment
ever appears in a message: they may be secrets.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from forge_ci.config.models import EnvironmentConfig, ForgeConfig
from forge_ci.errors import ConfigError
from forge_ci.notify.config import TYPES as NOTIFY_TYPES

KeyPath = tuple[str | int, ...]
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")


@dataclass(frozen=True)
class LoadedConfig:
    """The validated config, where it came from, and the values taken from the environment."""

    config: ForgeConfig
    path: Path
    secrets: tuple[str, ...]  # every ${VAR} value: callers mask them in logs

    @property
    def root(self) -> Path:
        return self.path.parent

    def environment(self, name: str) -> EnvironmentConfig:
        envs = self.config.environments
        if name not in envs:
            near = difflib.get_close_matches(name, list(envs), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(sorted(envs))}"
            raise ConfigError(f"no environment {name!r}", file=str(self.path), key="environments",
                              hint=hint)
        return envs[name]


def load(path: Path, environ: Mapping[str, str], environment: str | None = None) -> LoadedConfig:
    """Parse, expand and validate ``path``; raise :class:`ConfigError` on any problem.

    With ``environment``, a ``${VAR}`` inside another environment may be unset (it
    stays literal): deploying to staging must not need production's secrets.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path),
                          hint="run forge-ci in the site's repository or pass --config PATH",
                          ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e.__class__.__name__}", file=str(path)) from None
    return parse(text, environ, filename=str(path), path=path, environment=environment)


def parse(text: str, environ: Mapping[str, str], *, filename: str = "forge.yml",
          path: Path | None = None, environment: str | None = None) -> LoadedConfig:
    lines: dict[KeyPath, int] = {}
    data = _compose(text, filename, lines)
    secrets: list[str] = []
    exp = _Expander(environ, filename, lines, secrets, environment)
    data = exp.expand(data, ())
    try:
        config = ForgeConfig.model_validate(data)
    except pydantic.ValidationError as e:
        # Another environment may be invalid only because its ${VAR}s are not set
        # in this run: leave it out rather than demand secrets this run never uses.
        skip = {str(k[1]) for k in exp.unresolved}
        envs = data.get("environments") if isinstance(data, dict) else None
        if not skip or not isinstance(envs, dict) or not _only_in(e, skip):
            raise _translate(e, filename, lines) from None
        data = {**data, "environments": {k: v for k, v in envs.items() if k not in skip}}
        try:
            config = ForgeConfig.model_validate(data)
        except pydantic.ValidationError as e2:
            raise _translate(e2, filename, lines) from None
    return LoadedConfig(config=config, path=(path or Path(filename)).resolve(),
                        secrets=tuple(secrets))


# -- YAML with line numbers ---------------------------------------------------

def _compose(text: str, filename: str, lines: dict[KeyPath, int]) -> Any:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise ConfigError("the file is empty", file=filename, hint="start with 'version: 1'")
        return _to_python(node, (), filename, lines)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"not valid YAML: {problem}", file=filename, line=line,
                          hint="check indentation and quoting on that line") from None


def _to_python(node: yaml.Node, key: KeyPath, filename: str, lines: dict[KeyPath, int]) -> Any:
    lines[key] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            k = k_node.value if isinstance(k_node, yaml.ScalarNode) else None
            if not isinstance(k, str):
                raise ConfigError("keys must be plain strings", file=filename,
                                  line=k_node.start_mark.line + 1, key=_dotted(key))
            if k in out:
                raise ConfigError(f"key {k!r} is given twice", file=filename,
                                  line=k_node.start_mark.line + 1, key=_dotted(key),
                                  hint="remove one of them")
            child = (*key, k)
            out[k] = _to_python(v_node, child, filename, lines)
            lines[child] = k_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*key, i), filename, lines) for i, v in enumerate(node.value)]
    # Scalars: let PyYAML's safe resolver type them (int, bool, null, str).
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    return yaml.safe_load(yaml.serialize(node))


# -- ${VAR} expansion ---------------------------------------------------------

class _Expander:
    def __init__(self, environ: Mapping[str, str], filename: str, lines: dict[KeyPath, int],
                 secrets: list[str], environment: str | None) -> None:
        self.environ, self.filename, self.lines = environ, filename, lines
        self.secrets, self.environment = secrets, environment
        self.unresolved: set[KeyPath] = set()

    def _optional(self, key: KeyPath) -> bool:
        # Another environment's variables: not needed by this run.
        return (self.environment is not None and len(key) >= 2
                and key[0] == "environments" and key[1] != self.environment)

    def expand(self, value: Any, key: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self.expand(v, (*key, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*key, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value
        return _VAR.sub(lambda m: self._one(m, key), value)

    def _one(self, m: re.Match[str], key: KeyPath) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        line, dotted = _line(self.lines, key), _dotted(key)
        if name is None:
            raise ConfigError(f"malformed variable reference {m.group(0)!r}", file=self.filename,
                              line=line, key=dotted,
                              hint="write ${NAME} (letters, digits, _) or $$ for a literal $")
        if name not in self.environ:
            if self._optional(key):
                self.unresolved.add(key)
                return m.group(0)
            raise ConfigError(f"${{{name}}} is not set in the environment", file=self.filename,
                              line=line, key=dotted,
                              hint=f"export {name}=... (in Actions: pass it as a secret in env:)")
        self.secrets.append(self.environ[name])
        return self.environ[name]


# -- pydantic errors -> ConfigError ------------------------------------------

def _translate(exc: pydantic.ValidationError, filename: str,
               lines: dict[KeyPath, int]) -> ConfigError:
    errors = exc.errors(include_url=False, include_input=False)
    # A typo shows up as "unknown key" plus "missing": the unknown key is the useful one.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: KeyPath = _drop_notify_tag(tuple(p for p in first["loc"] if not _is_union_tag(p)))
    kind = first["type"]
    hint = None
    if kind == "extra_forbidden":
        bad = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        near = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.5)
        message = f"unknown key {bad!r}"
        hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
    elif kind == "missing":
        message = f"required key {loc[-1]!r} is missing"
        loc_for_line = loc[:-1]
        return ConfigError(message, file=filename, line=_line(lines, loc_for_line),
                           key=_dotted(loc_for_line) or None, hint="add it")
    else:
        # Messages are pydantic's wording of the rule; they never include the input value.
        message = str(first["msg"]).removeprefix("Value error, ")
    more = len(errors)
    if more > 1:
        message += f" (and {more - 1} more problem{'s' if more > 2 else ''})"
    return ConfigError(message, file=filename, line=_line(lines, loc), key=_dotted(loc),
                       hint=hint)


def _only_in(exc: pydantic.ValidationError, environments: set[str]) -> bool:
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        if not (len(loc) >= 2 and loc[0] == "environments" and loc[1] in environments):
            return False
    return True


def _drop_notify_tag(loc: KeyPath) -> KeyPath:
    # notify entries are a union tagged by `type:`; pydantic adds the tag after the index.
    return tuple(p for i, p in enumerate(loc)
                 if not (i >= 2 and p in NOTIFY_TYPES and isinstance(loc[i - 1], int)
                         and loc[i - 2] == "notify"))


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the chosen union member's name in loc for X | None fields.
    return isinstance(part, str) and (part.endswith("]") or part[:1].isupper())


def _allowed_keys(loc: KeyPath) -> list[str]:
    model: Any = ForgeConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            if model is ForgeConfig.model_fields["environments"].annotation:
                continue
            # dict[str, Model]: the part is a free name (an environment); keep the value model.
            model = _value_model(model)
            continue
        model = _inner_model(field.annotation)
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if hasattr(inner, "model_fields") or getattr(inner, "__origin__", None) is dict:
            return inner
    return annotation


def _value_model(model: Any) -> Any:
    if getattr(model, "__origin__", None) is dict:
        return _inner_model(model.__args__[1])
    return model


def _line(lines: dict[KeyPath, int], key: KeyPath) -> int | None:
    while True:
        if key in lines:
            return lines[key]
        if not key:
            return None
        key = key[:-1]


def _dotted(key: KeyPath) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
