"""Shared input rules: names, labels and similar strings used across resources, and what
JSON the backend accepts (finite numbers, text every database can store)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from backend.errors import Invalid

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:-]{0,128}$")
MAX_LABELS = 64
# Ids, versions and log seqs are INTEGER columns (32 bits on PostgreSQL): a larger number
# names nothing, and the database driver would fail on it instead of answering 404.
MAX_ID = 2**31 - 1


def check_name(name: str, what: str) -> str:
    """A name usable in URLs and directory names, or Invalid."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(
            f"{what} name {name!r} is invalid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_labels(labels: object, what: str = "labels") -> dict[str, str]:
    """A flat string-to-string label map such as {"provider": "aws"}, or Invalid."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise Invalid(f"{what} must be an object of string keys and values, e.g. {{'env': 'prod'}}")
    if len(labels) > MAX_LABELS:
        raise Invalid(f"{what}: at most {MAX_LABELS} labels")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            raise Invalid(
                f"{what}: key {key!r} is invalid: use letters, digits, '_', '.', '/' or '-', "
                "starting and ending with a letter or digit"
            )
        if not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            raise Invalid(
                f"{what}: value {value!r} of {key!r} is invalid: a string of at most 128 "
                "letters, digits, '_', '.', '/', ':' or '-'"
            )
        out[key] = value
    return out


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as text (PostgreSQL refuses NUL in text, and nothing can
    encode a lone surrogate as UTF-8), or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored as text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return (
            f"contains a lone surrogate (\\u{ord(bad):04x}), which is not a character: "
            "send UTF-8 text (a surrogate must be one half of a pair)"
        )
    return None


def check_text(text: str, what: str) -> str:
    """``text`` when it can be stored as text, else Invalid naming ``what``."""
    problem = text_problem(text)
    if problem is not None:
        raise Invalid(f"{what} {problem}")
    return text


class _NonFinite:
    """A number JSON has no value for (NaN, Infinity, -Infinity, or one too large for a
    float), kept by ``parse_json`` as written so the refusal can quote it."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _float(literal: str) -> float | _NonFinite:
    value = float(literal)
    return value if math.isfinite(value) else _NonFinite(literal)


def _where(path: list[str | int], what: str) -> str:
    if not path:
        return what
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{what} field {shown!r}"


def _refusal(value: Any) -> str | None:
    if isinstance(value, _NonFinite):
        return f"{value.literal} is not a number JSON allows: send a finite number"
    if isinstance(value, str):
        return text_problem(value)
    return None


def parse_json(data: bytes | str, what: str = "request body") -> Any:
    """JSON as the backend accepts it: finite numbers only (Python's parser takes NaN and
    Infinity, which no JSON encoder writes back) and strings, keys included, that can be
    stored as text. Invalid names the field and says what is wrong."""
    try:
        doc = json.loads(data, parse_constant=_NonFinite, parse_float=_float)
    except UnicodeDecodeError:
        raise Invalid(f"{what} is not UTF-8 text: send JSON encoded as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Invalid(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise Invalid(f"{what} is nested too deeply to read") from None
    except ValueError:  # Python's limit on the digits of an integer
        raise Invalid(f"{what} holds a number with more digits than any field takes") from None
    # Iteratively: a deeply nested document must not exhaust the stack here either.
    stack: list[tuple[list[str | int], Any]] = [([], doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                problem = text_problem(key)
                if problem is not None:
                    raise Invalid(f"{_where(path, what)}: a key {problem}")
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, i], item) for i, item in enumerate(value))
        else:
            problem = _refusal(value)
            if problem is not None:
                raise Invalid(f"{_where(path, what)}: {problem}")
    return doc
