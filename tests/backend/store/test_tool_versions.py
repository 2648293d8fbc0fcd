"""Terraform's version constraint syntax, operator by operator, pre-releases included."""

from __future__ import annotations

import pytest

from backend.errors import Invalid
from backend.tool_versions import highest, parse_constraint, required_version


@pytest.mark.parametrize(
    ("constraint", "allowed", "refused"),
    [
        ("= 1.11.4", ["1.11.4", "v1.11.4"], ["1.11.5", "1.11.3", "1.11.4-rc1"]),
        ("1.11.4", ["1.11.4"], ["1.11.40"]),
        ("!= 1.11.4", ["1.11.3", "1.12.0"], ["1.11.4"]),
        ("> 1.9", ["1.9.1", "2.0.0"], ["1.9.0", "1.8.9"]),
        (">= 1.9", ["1.9.0", "1.11.4"], ["1.8.99"]),
        ("< 1.10", ["1.9.9", "0.15.0"], ["1.10.0", "1.11.4"]),
        ("<= 1.10", ["1.10.0", "1.9.0"], ["1.10.1"]),
        ("~> 1.11", ["1.11.0", "1.11.4", "1.99.0"], ["1.10.9", "2.0.0"]),
        ("~> 1.11.4", ["1.11.4", "1.11.9"], ["1.11.3", "1.12.0"]),
        ("~> 1", ["1.0.0", "1.11.4"], ["2.0.0", "0.9.0"]),
        (">= 1.9, < 2.0", ["1.9.0", "1.11.4"], ["2.0.0", "1.8.0"]),
        (">=1.9,<1.11", ["1.10.2"], ["1.11.0"]),
        # Pre-releases: only an exact constraint selects them.
        ("= 1.12.0-beta1", ["1.12.0-beta1"], ["1.12.0", "1.12.0-beta2"]),
        (">= 1.11", ["1.12.0"], ["1.12.0-beta1", "1.12.0-rc1"]),
        ("~> 1.12.0", ["1.12.0"], ["1.12.0-alpha20240101"]),
        ("< 1.12.0", ["1.11.9"], ["1.12.0-beta1"]),
    ],
)
def test_operators(constraint: str, allowed: list[str], refused: list[str]) -> None:
    parsed = parse_constraint(constraint)
    for version in allowed:
        assert parsed.allows(version), (constraint, version)
    for version in refused:
        assert not parsed.allows(version), (constraint, version)


@pytest.mark.parametrize(
    "bad", ["", "  ", ">= ", "=> 1.0", "~> one", ">= 1.0,", "1.2.3.4", "latest"]
)
def test_malformed_constraints_are_refused_with_the_part(bad: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_constraint(bad)
    assert "constraint" in str(info.value)


def test_highest_satisfying_version() -> None:
    have = ["1.9.8", "1.11.4", "1.12.0-beta1", "1.10.0"]
    assert highest(have, parse_constraint("~> 1.9.0")) == "1.9.8"
    assert highest(have, parse_constraint(">= 1.9")) == "1.11.4"
    assert highest(have, parse_constraint("= 1.12.0-beta1")) == "1.12.0-beta1"
    assert highest(have, None) == "1.11.4"
    assert highest(have, parse_constraint(">= 2.0")) is None


def test_required_version_from_the_configuration() -> None:
    files = {
        "main.tf": 'terraform {\n  required_version = ">= 1.5"\n}\n',
        "versions.tf": 'terraform {\n  required_version = "< 2.0"\n}\n',
    }
    assert required_version(files) == ">= 1.5, < 2.0"
    assert required_version({"main.tf": 'resource "x" "y" {}'}) is None
