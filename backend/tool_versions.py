"""Terraform's version constraint syntax: parse `">= 1.9, < 2.0"`, `"~> 1.11"`, `"= 1.11.4"`
and match versions against it, as Terraform (hashicorp/go-version) does.

Operators: `=` (or none), `!=`, `>`, `>=`, `<`, `<=`, `~>` (the rightmost given part may
grow: `~> 1.11` is `>= 1.11, < 2.0`, `~> 1.11.4` is `>= 1.11.4, < 1.12.0`). A
pre-release such as `1.12.0-beta1` is matched only by an exact `=` constraint that names
it, never by a range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.errors import Invalid

_VERSION = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_CONSTRAINT = re.compile(r"^\s*(~>|>=|<=|!=|=|>|<)?\s*(\S+)\s*$")


@dataclass(frozen=True)
class Version:
    release: tuple[int, int, int]
    is_release: bool  # False for a pre-release, which sorts before its release
    pre: tuple[tuple[int, int | str], ...]
    parts: int  # how many of major.minor.patch were written (for ~>)
    text: str

    def __str__(self) -> str:
        return self.text


def _pre_key(pre: str) -> tuple[tuple[int, int | str], ...]:
    # Numeric identifiers sort numerically and before alphanumeric ones (semver).
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))


def parse_version(text: str) -> Version:
    match = _VERSION.match(text.strip())
    if match is None:
        raise Invalid(f"{text!r} is not a version like 1.11.4")
    major, minor, patch, pre = match.groups()
    parts = 1 + (minor is not None) + (patch is not None)
    return Version(
        (int(major), int(minor or 0), int(patch or 0)),
        pre is None,
        _pre_key(pre) if pre else (),
        parts,
        text.strip().lstrip("v"),
    )


@dataclass(frozen=True)
class Constraint:
    text: str
    terms: tuple[tuple[str, Version], ...]

    def allows(self, version: Version | str) -> bool:
        v = parse_version(version) if isinstance(version, str) else version
        return all(_term_allows(op, bound, v) for op, bound in self.terms)


def _key(v: Version) -> tuple[tuple[int, int, int], bool, tuple[tuple[int, int | str], ...]]:
    return (v.release, v.is_release, v.pre)


def _term_allows(op: str, bound: Version, v: Version) -> bool:
    if op == "=":
        return _key(v) == _key(bound)
    if op == "!=":
        return _key(v) != _key(bound)
    if not v.is_release:
        return False  # pre-releases only by exact match
    if op == ">":
        return _key(v) > _key(bound)
    if op == ">=":
        return _key(v) >= _key(bound)
    if op == "<":
        return _key(v) < _key(bound)
    if op == "<=":
        return _key(v) <= _key(bound)
    # "~>": at least `bound`, below the next increment of its second-to-last given part.
    if _key(v) < _key(bound):
        return False
    major, minor, _ = bound.release
    upper = (major + 1, 0, 0) if bound.parts <= 2 else (major, minor + 1, 0)
    return v.release < upper


def parse_constraint(text: str) -> Constraint:
    """Parse a constraint; Invalid with the offending part when it is malformed."""
    if not text or not text.strip():
        raise Invalid("a version constraint must not be empty")
    terms = []
    for part in text.split(","):
        match = _CONSTRAINT.match(part)
        if match is None:
            raise Invalid(f"version constraint {text!r}: {part.strip()!r} is malformed")
        op, version = match.groups()
        try:
            terms.append((op or "=", parse_version(version)))
        except Invalid:
            raise Invalid(
                f"version constraint {text!r}: {version!r} is not a version "
                "(use operators =, !=, >, >=, <, <=, ~> and versions like 1.11.4)"
            ) from None
    return Constraint(text.strip(), tuple(terms))


def highest(versions: list[str], constraint: Constraint | None) -> str | None:
    """The highest of `versions` the constraint allows (any release when there is none)."""
    allowed = []
    for text in versions:
        try:
            v = parse_version(text)
        except Invalid:
            continue
        if (constraint is None and v.is_release) or (constraint and constraint.allows(v)):
            allowed.append(v)
    return str(max(allowed, key=_key)) if allowed else None


_REQUIRED = re.compile(r'required_version\s*=\s*"([^"]*)"')


def required_version(files: dict[str, str]) -> str | None:
    """The `required_version` constraints of a configuration's top-level *.tf files,
    joined (Terraform requires all of them), or None."""
    found = [m.group(1) for text in files.values() for m in _REQUIRED.finditer(text)]
    return ", ".join(found) if found else None
