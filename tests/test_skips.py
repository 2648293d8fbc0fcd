"""Tests skipped for want of something on the machine fail instead under IAC_TEST_STRICT=1."""

from __future__ import annotations

import pytest

from tests.conftest import skip_unless_strict


@pytest.mark.parametrize(
    ("strict", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_skip_unless_strict(monkeypatch: pytest.MonkeyPatch, strict: str, outcome: type) -> None:
    monkeypatch.setenv("IAC_TEST_STRICT", strict)
    with pytest.raises(outcome, match="no frobnicator here"):
        skip_unless_strict("no frobnicator here")
