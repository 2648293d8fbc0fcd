"""Command-line options generated from a pydantic-settings model, and its errors as one line.

A settings class is the one place where an option's name, environment variable, default,
type, rules and documentation live. From it, ``add_options`` makes the argparse flags and
their ``--help`` text, and ``load`` builds the settings from the flags given on the command
line (which win), the environment (which wins over the default) and the defaults. A bad
value becomes a ``ConfigError``: one line that says what was wrong and names both the flag
and the environment variable, for the CLI to print before it exits 2.

A field's flag is ``--`` and its name with dashes, its variable the model's prefix and its
name in capitals, unless a ``Flag`` in its ``Annotated`` metadata or a ``validation_alias``
says otherwise. A ``bool`` is a switch (``--insecure``), a ``list`` or ``dict`` a flag that
may be repeated (``--label a=b --label c=d``) and a comma-separated variable.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, TypeVar, get_origin

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off", ""})
M = TypeVar("M", bound=BaseSettings)


@dataclass(frozen=True)
class Flag:
    """How a settings field looks on the command line, where the default does not fit."""

    name: str = ""  # e.g. "--label" for the field `labels`
    metavar: str = ""
    default_text: str = ""  # shown in --help instead of the default value
    merge_env: bool = False  # a repeated flag adds to the variable's items instead of replacing


class ConfigError(ValueError):
    """Settings that cannot work; the message is one line naming the flag and variable."""


def parse_bool(value: object) -> bool:
    """true/1/yes/on and false/0/no/off/"" (any case), as environment variables are written."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise ValueError(f"{value!r} is not a boolean: use true, 1, yes, on or false, 0, no, off")


def _flag(info: FieldInfo) -> Flag:
    for item in info.metadata:
        if isinstance(item, Flag):
            return item
    return Flag()


def _fields(model: type[BaseSettings]) -> dict[str, FieldInfo]:
    return dict(model.model_fields)


def flag_name(model: type[BaseSettings], field: str) -> str:
    return _flag(_fields(model)[field]).name or "--" + field.replace("_", "-")


def env_name(model: type[BaseSettings], field: str) -> str:
    alias = _fields(model)[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return (str(model.model_config.get("env_prefix", "")) + field).upper()


def env_names(model: type[BaseSettings]) -> set[str]:
    """Every environment variable the model reads."""
    return {env_name(model, field) for field in _fields(model)}


def names(model: type[BaseSettings], field: str) -> str:
    """How a message names a setting: `--max-concurrent (IAC_RUNNER_MAX_CONCURRENT)`."""
    return f"{flag_name(model, field)} ({env_name(model, field)})"


def set_by(model: type[BaseSettings], field: str) -> str:
    """Where a value came from, for the end of a message: `set by --grace or IAC_RUNNER_GRACE`."""
    return f"set by {flag_name(model, field)} or {env_name(model, field)}"


def _repeated(info: FieldInfo) -> bool:
    return get_origin(info.annotation) in (list, dict)


def _default_text(info: FieldInfo) -> str:
    shown = _flag(info).default_text
    if shown:
        return shown
    default = info.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default) if default not in ("", None, [], {}) else ""


def add_options(parser: argparse.ArgumentParser, model: type[BaseSettings]) -> None:
    """One flag per field of `model`, its help the field's description, variable and default.

    Flags default to "not given" (argparse.SUPPRESS), so that `given` returns only what the
    command line set and the environment and defaults come from the model.
    """
    for field, info in _fields(model).items():
        flag, spec = flag_name(model, field), _flag(info)
        env = env_name(model, field)
        if info.annotation is bool:
            where = f"{env}=true|false"
        elif _repeated(info):
            where = f"{env}, comma-separated"
        else:
            where = env
        default = _default_text(info)
        text = f"{info.description} [{where}{f'; default: {default}' if default else ''}]"
        # argparse expands %-formats in help; a description may show a literal percent.
        text = text.replace("%", "%%")
        if info.annotation is bool:
            parser.add_argument(
                flag, dest=field, action="store_true", default=argparse.SUPPRESS, help=text
            )
            continue
        parser.add_argument(
            flag,
            dest=field,
            action="append" if _repeated(info) else "store",
            default=argparse.SUPPRESS,
            metavar=spec.metavar or field.upper(),
            help=text,
        )


def given(args: argparse.Namespace, model: type[BaseSettings]) -> dict[str, Any]:
    """The fields of `model` that the command line set."""
    return {k: v for k, v in vars(args).items() if k in _fields(model)}


def _env_value(name: str) -> str | None:
    # pydantic-settings matches variable names without regard to case; so does this.
    for key, value in os.environ.items():
        if key.upper() == name:
            return value
    return None


def load(model: type[M], values: dict[str, Any]) -> M:
    """`model` from `values` (the command line), the environment and the defaults, in that
    order of precedence; ConfigError with one line when a value is bad."""
    values = dict(values)
    for field, info in _fields(model).items():
        from_env = _env_value(env_name(model, field))
        if field in values and _flag(info).merge_env and from_env:
            values[field] = [from_env, *values[field]]
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(describe(model, exc)) from None
    except SettingsError as exc:  # a variable the settings source could not even read
        raise ConfigError(str(exc)) from None


def _field_of(model: type[BaseSettings], loc: tuple[int | str, ...]) -> str | None:
    if not loc:
        return None
    # An error names the field, or the variable when the value came from an alias.
    head = str(loc[0])
    for field in _fields(model):
        if head == field or head.upper() == env_name(model, field):
            return field
    return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _message(error: Any) -> str:
    """pydantic's error in the words of a command line: what the value is, what it must be."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{value!r} is not an integer"
    if kind in ("float_parsing", "float_type"):
        return f"{value!r} is not a number"
    if kind == "finite_number":
        return f"{value!r} is not a finite number"
    if kind == "greater_than":
        return f"{value!r} must be more than {_number(ctx['gt'])}"
    if kind == "greater_than_equal":
        return f"{value!r} must be at least {_number(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"{value!r} must be at most {_number(ctx['le'])}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return f"{value!r}: {error['msg'][0].lower()}{error['msg'][1:]}"


def describe(model: type[BaseSettings], exc: ValidationError) -> str:
    """Every error of `exc` on one line, each naming the flag and variable it came from."""
    parts = []
    for error in exc.errors():
        field = _field_of(model, tuple(error["loc"]))
        text = _message(error)
        if field is not None:
            text += f" ({set_by(model, field)})"
        parts.append(text)
    return "; ".join(parts)
