"""Shared input rules: names, labels and similar strings used across resources."""

from __future__ import annotations

import re

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
