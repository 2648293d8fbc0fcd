"""Fixtures: real runner servers on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import RunnerProcess, make_fake_tool, start_runner


@pytest.fixture
def fake_env(tool_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Environment in which `terraform` is tests/fake_tool.py."""
    return {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(tmp_path)}


@pytest.fixture
def runner(tool_env: dict[str, str], tmp_path: Path) -> Iterator[RunnerProcess]:
    """A runner server with real terraform."""
    server = start_runner(tmp_path, tool_env, "--grace", "2")
    yield server
    server.stop()


@pytest.fixture
def fake_runner(fake_env: dict[str, str], tmp_path: Path) -> Iterator[RunnerProcess]:
    """A runner server whose terraform is the fake tool (precise output and timing)."""
    server = start_runner(tmp_path, fake_env, "--grace", "2", "--max-concurrent", "2")
    yield server
    server.stop()
