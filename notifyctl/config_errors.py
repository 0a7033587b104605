"""A configuration that does not validate, told as the operator needs it: one sentence naming the
key, the file or the environment variable it came from, and for a misspelt key the likely one.

pydantic's errors carry a location (with the tags of union members, `constrained-int`, that mean
nothing to an operator) and a type; here the location is walked along the settings models to the
key as written, the type becomes plain words, and the errors of one key (a union's members) become
one sentence: `processes must be at least 1, or "auto" (got 0)`.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from notifyctl.errors import ConfigError

Loc = tuple[str, ...]
_CHECKED_AT = re.compile(r"^([\w.-]+): (.+)$", re.DOTALL)  # "providers.x.type: unknown provider type …"
_SECRET_HINTS = ("token", "secret", "password", "key", "sid")

# What a value must be, by pydantic error type (ctx fields in braces).
_MUST_BE = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text (in quotes)",
    "string_too_short": "at least {min_length} character(s) long",
    "string_too_long": "at most {max_length} characters long",
    "list_type": 'a list, like ["a", "b"]',
    "tuple_type": 'a list, like ["a", "b"]',
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "literal_error": "one of {expected}",
    "enum": "one of {expected}",
    "time_parsing": "a time of day, like 21:00:00",
    "time_type": "a time of day, like 21:00:00",
}


def _fields_of(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field.annotation for name, field in model.model_fields.items()}


def _step(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """What a field holds: (a settings model or None, whether a table of names comes first)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _step(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            found = _step(member)
            if found[0] is not None:
                return found
        return None, False
    if origin is dict:
        inner, _ = _step(typing.get_args(annotation)[1])
        return inner, True  # [providers.NAME], [events] NAME = …: the name is a key as written
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def key_path(loc: Sequence[int | str], root: type[BaseModel]) -> Loc:
    """The key as written, from a pydantic location: the tags of union members dropped."""
    model: type[BaseModel] | None = root
    table_of_names = False
    kept: list[str] = []
    for part in loc:
        if isinstance(part, int):
            kept.append(str(part))
        elif table_of_names:
            kept.append(part)
            table_of_names = False
        elif model is not None and part in model.model_fields:
            kept.append(part)
            model, table_of_names = _step(model.model_fields[part].annotation)
        elif model is not None and model.model_config.get("extra") == "allow":
            kept.append(part)  # a provider's own option
            model = None
        # else: a union member's tag (`constrained-int`, `literal['auto']`): not a key
    return tuple(kept)


def known_keys(parent: Loc, root: type[BaseModel]) -> list[str]:
    """The keys a table at `parent` may hold."""
    model: type[BaseModel] | None = root
    table_of_names = False
    for part in parent:
        if model is None:
            return []
        if table_of_names:
            table_of_names = False
            continue
        if part not in model.model_fields:
            return []
        model, table_of_names = _step(model.model_fields[part].annotation)
    if model is None or table_of_names:
        return []
    return [name for name, field in model.model_fields.items() if not field.exclude]  # not source, base_dir


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """` (did you mean 'timeout_s'?)` for a likely misspelling, else a list of the known keys."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known: {', '.join(sorted(known))})" if known else ""


def _shown(key: Loc, value: Any) -> str:
    """` (got 0)`: the value given, unless it may be a secret or is not short."""
    if any(hint in (key[-1] if key else "").lower() for hint in _SECRET_HINTS):
        return ""
    if isinstance(value, bool):
        return f" (got {str(value).lower()})"
    if isinstance(value, int | float) or (isinstance(value, str) and len(value) <= 40):
        return f" (got {value!r})"
    return ""


def _must_be(error: ErrorDetails) -> str | None:
    wanted = _MUST_BE.get(error["type"])
    if wanted is None:
        return None
    expected = str(error.get("ctx", {}).get("expected", ""))
    if error["type"] == "literal_error" and "," not in expected and " or " not in expected:
        return expected  # a union's one literal: `at least 1, or 'auto'`
    ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in error.get("ctx", {}).items()}
    try:
        return wanted.format(**ctx)
    except (KeyError, IndexError):
        return wanted


def sentence(errors: Sequence[ErrorDetails], key: Loc, known: Sequence[str]) -> str:
    """The errors of one key as one sentence."""
    name = key[-1] if key else "the configuration"
    first = errors[0]
    if first["type"] == "extra_forbidden":
        where = f" in [{'.'.join(key[:-1])}]" if len(key) > 1 else ""
        return f"unknown key '{name}'{where}{did_you_mean(name, known)}"
    wanted = [w for w in (_must_be(e) for e in errors) if w]
    if wanted:
        return f"{name} must be {', or '.join(dict.fromkeys(wanted))}{_shown(key, first.get('input'))}"
    return str(first["msg"]).removeprefix("Value error, ")


def _key_of(error: ErrorDetails, root: type[BaseModel], prefix: Loc) -> Loc:
    loc = error["loc"]
    if error["type"] == "extra_forbidden" and loc:  # the unknown key itself is no field to walk
        return prefix + key_path(loc[:-1], root) + (str(loc[-1]),)
    return prefix + key_path(loc, root)


def env_variable(key: Loc, from_env: Mapping[Loc, str]) -> str | None:
    """The NOTIFYCTL_* variable that set `key` (or a table around it), if one did."""
    for length in range(len(key), 0, -1):
        found = from_env.get(key[:length])
        if found:
            return found
    return None


def config_error(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    source: str,
    from_env: Mapping[Loc, str],
    prefix: Loc = (),
    missing: Mapping[str, str] | None = None,
    known_extra: Sequence[str] = (),
) -> ConfigError:
    """The first wrong key of a validation error, as a ConfigError naming it and where it came from.
    `prefix`: where `root` sits in the configuration; `known_extra`: more keys its table may hold."""
    errors = exc.errors()
    key = _key_of(errors[0], root, prefix)
    same = [e for e in errors if _key_of(e, root, prefix) == key]
    first = same[0]
    if first["type"] == "missing":
        message = (missing or {}).get(str(first["loc"][-1]), f"{key[-1]} is missing (required)")
    elif first["type"] == "value_error" and not first["loc"]:
        message = str(first["msg"]).removeprefix("Value error, ")
        checked = _CHECKED_AT.match(message)
        if checked:  # a check across keys names the key it is about first
            key, message = tuple(checked.group(1).split(".")), checked.group(2)
    else:
        known = [*known_keys(key[len(prefix) : -1], root), *known_extra]
        message = sentence(same, key, known)
    dotted = ".".join(key) or "(top level)"
    variable = env_variable(key, from_env)
    return ConfigError(message, key=dotted, path=None if variable else source, variable=variable)
