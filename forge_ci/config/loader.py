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
class UnsetVariable:
    """A ``${VAR}`` that was not set in this run: a note, or an error when it is needed."""

    name: str
    key: str
    line: int | None

    def note(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.key}: ${{{self.name}}} is not set"


@dataclass(frozen=True)
class LoadedConfig:
    """The validated config, where it came from, and the values taken from the environment."""

    config: ForgeConfig
    path: Path
    secrets: tuple[str, ...]  # every ${VAR} value: callers mask them in logs
    unset: tuple[UnsetVariable, ...] = ()  # left literal: not needed by this run

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
        # A run that works on an environment needs every one of its variables.
        missing = [u for u in self.unset if u.key.startswith(f"environments.{name}.")]
        if missing:
            raise _missing_error(missing, str(self.path))
        return envs[name]


def load(path: Path, environ: Mapping[str, str], environment: str | None = None, *,
         lenient: bool = False) -> LoadedConfig:
    """Parse, expand and validate ``path``; raise :class:`ConfigError` on any problem.

    With ``environment``, a ``${VAR}`` inside another environment may be unset (it
    stays literal): deploying to staging must not need production's secrets. With
    ``lenient`` no variable is needed (``config check`` without an environment,
    ``build``): unset ones are listed in :attr:`LoadedConfig.unset`, and
    :meth:`LoadedConfig.environment` refuses an environment that has any.
    Every structural problem of the file is reported at once (``ConfigError.more``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path),
                          hint="run forge-ci in the site's repository or pass --config PATH",
                          ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e.__class__.__name__}", file=str(path)) from None
    return parse(text, environ, filename=str(path), path=path, environment=environment,
                 lenient=lenient)


def parse(text: str, environ: Mapping[str, str], *, filename: str = "forge.yml",
          path: Path | None = None, environment: str | None = None,
          lenient: bool = False) -> LoadedConfig:
    lines: dict[KeyPath, int] = {}
    data = _compose(text, filename, lines)
    secrets: list[str] = []
    exp = _Expander(environ, filename, lines, secrets)
    data = exp.expand(data, ())
    unresolved = set(exp.unresolved)
    config: ForgeConfig | None = None
    try:
        config = ForgeConfig.model_validate(data)
    except pydantic.ValidationError as e:
        # Structure first: a typo must not hide behind the variables it makes look missing.
        errors = [err for err in e.errors(include_url=False, include_input=False)
                  if not _under(_clean(err["loc"]), unresolved)]
        problems = _translate_all(errors, filename, lines)
        if problems:
            raise _combine(problems) from None
    needed = [UnsetVariable(name, _dotted(key), _line(lines, key))
              for key, name in exp.unresolved.items() if _needed(key, environment, lenient)]
    if needed:
        raise _missing_error(needed, filename)
    if config is None:
        # Invalid only where a variable is unset: leave those environments out rather
        # than demand secrets this run never uses.
        skip = {str(k[1]) for k in unresolved if len(k) >= 2 and k[0] == "environments"}
        envs = data.get("environments") if isinstance(data, dict) else None
        if isinstance(envs, dict):
            data = {**data, "environments": {k: v for k, v in envs.items() if k not in skip}}
        try:
            config = ForgeConfig.model_validate(data)
        except pydantic.ValidationError as e2:
            raise _combine(_translate_all(e2.errors(include_url=False, include_input=False),
                                          filename, lines)) from None
    unset = tuple(UnsetVariable(name, _dotted(key), _line(lines, key))
                  for key, name in sorted(exp.unresolved.items(), key=lambda kv: _dotted(kv[0])))
    return LoadedConfig(config=config, path=(path or Path(filename)).resolve(),
                        secrets=tuple(secrets), unset=unset)


def _needed(key: KeyPath, environment: str | None, lenient: bool) -> bool:
    if lenient:
        return False
    # With an environment, another environment's variables are not needed by this run.
    return not (environment is not None and len(key) >= 2 and key[0] == "environments"
                and key[1] != environment)


def _under(loc: KeyPath, keys: set[KeyPath]) -> bool:
    return any(loc[:len(k)] == k for k in keys)


def _missing_error(missing: list[UnsetVariable], filename: str) -> ConfigError:
    errors = [ConfigError(f"${{{u.name}}} is not set in the environment", file=filename,
                          line=u.line, key=u.key,
                          hint=f"export {u.name}=... (in Actions: pass it as a secret in env:)")
              for u in missing]
    return _combine(errors)


def _combine(errors: list[ConfigError]) -> ConfigError:
    first = errors[0]
    return ConfigError(first.detail, file=first.file, line=first.line, key=first.key,
                       hint=first.hint, more=tuple(errors[1:]))


# -- YAML with line numbers ---------------------------------------------------

# A forge.yml has a few hundred values; these bounds only stop hostile or broken files
# (an alias "billion laughs", absurd nesting) before they cost memory or the stack.
MAX_DEPTH = 64
MAX_VALUES = 100_000


def _compose(text: str, filename: str, lines: dict[KeyPath, int]) -> Any:
    try:
        _check_shape(text, filename)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise ConfigError("the file is empty", file=filename, hint="start with 'version: 1'")
        return _to_python(node, (), filename, lines, [0])
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"not valid YAML: {problem}", file=filename, line=line,
                          hint="check indentation and quoting on that line") from None


def _check_shape(text: str, filename: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, which needs no recursion
    (composing a 5,000-deep document would exhaust Python's stack)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file=filename,
                                  line=mark.line + 1 if mark is not None else None,
                                  hint="forge.yml needs a few levels; check the file is the "
                                       "right one")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _to_python(node: yaml.Node, key: KeyPath, filename: str, lines: dict[KeyPath, int],
               count: list[int]) -> Any:
    # Aliases share nodes, so a small file can stand for billions of values: count every
    # value as it is expanded and stop at MAX_VALUES.
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise ConfigError(f"expands to more than {MAX_VALUES} values (YAML aliases?)",
                          file=filename, line=node.start_mark.line + 1,
                          hint="write the values out instead of nesting aliases (&name / *name)")
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
            out[k] = _to_python(v_node, child, filename, lines, count)
            lines[child] = k_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*key, i), filename, lines, count)
                for i, v in enumerate(node.value)]
    # Scalars: let PyYAML's safe resolver type them (int, bool, null, str).
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    return yaml.safe_load(yaml.serialize(node))


# -- ${VAR} expansion ---------------------------------------------------------

class _Expander:
    """Replaces ``${VAR}``; an unset one stays literal and is recorded by key."""

    def __init__(self, environ: Mapping[str, str], filename: str, lines: dict[KeyPath, int],
                 secrets: list[str]) -> None:
        self.environ, self.filename, self.lines, self.secrets = environ, filename, lines, secrets
        self.unresolved: dict[KeyPath, str] = {}

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
        if name is None:
            raise ConfigError(f"malformed variable reference {m.group(0)!r}", file=self.filename,
                              line=_line(self.lines, key), key=_dotted(key),
                              hint="write ${NAME} (letters, digits, _) or $$ for a literal $")
        if name not in self.environ:
            self.unresolved.setdefault(key, name)
            return m.group(0)
        self.secrets.append(self.environ[name])
        return self.environ[name]


# -- pydantic errors -> ConfigError ------------------------------------------

def _clean(loc: Any) -> KeyPath:
    return _drop_notify_tag(tuple(p for p in loc if not _is_union_tag(p)))


def _translate_all(errors: list[Any], filename: str,
                   lines: dict[KeyPath, int]) -> list[ConfigError]:
    # A typo shows up as "unknown key" plus "missing" beside it: the unknown key is the
    # useful one, so a "missing" next to an unknown key is left out.
    typo_parents = {_clean(e["loc"])[:-1] for e in errors if e["type"] == "extra_forbidden"}
    out: list[ConfigError] = []
    for err in errors:
        loc = _clean(err["loc"])
        if err["type"] == "missing" and loc[:-1] in typo_parents:
            continue
        out.append(_translate(err, loc, filename, lines))
    out.sort(key=lambda e: e.line or 0)
    return out


def _translate(err: Any, loc: KeyPath, filename: str, lines: dict[KeyPath, int]) -> ConfigError:
    kind = err["type"]
    hint = None
    if kind == "extra_forbidden":
        bad = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        near = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.5)
        message = f"unknown key {bad!r}"
        hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
    elif kind == "missing":
        loc_for_line = loc[:-1]
        return ConfigError(f"required key {loc[-1]!r} is missing", file=filename,
                           line=_line(lines, loc_for_line), key=_dotted(loc_for_line) or None,
                           hint="add it")
    else:
        # Messages are pydantic's wording of the rule; they never include the input value.
        message = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(message, file=filename, line=_line(lines, loc), key=_dotted(loc),
                       hint=hint)


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
