"""Fixtures of the reliability tests, and the session's tally of what they did."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.backend.platform import Backend, start_backend
from tests.procs import RunnerProcess
from tests.reliability.harness import SOAK, start_server


@pytest.fixture(scope="session")
def rel_env(tf_cli_config: str) -> dict[str, str]:
    """The environment of every process these tests start (like tests.conftest.tool_env,
    session-wide, with an ENCRYPTION_KEY so sensitive variables can be stored)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.pop("PYTHONUNBUFFERED", None)
    env.pop("ENCRYPTION_KEY", None)
    env.pop("DATABASE_URL", None)
    env["TF_CLI_CONFIG_FILE"] = tf_cli_config
    env["CHECKPOINT_DISABLE"] = "1"
    env["ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    return env


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def platform(rel_env: dict[str, str], module_tmp: Path) -> Iterator[tuple[Backend, RunnerProcess]]:
    """One runner server (label provider=aws) and one backend on SQLite, for a module."""
    runner = start_server(module_tmp, rel_env, "aws-1", "--label", "provider=aws")
    backend = start_backend(
        module_tmp,
        rel_env,
        f"sqlite:///{module_tmp / 'iac.db'}",
        IAC_RUNNER_LOST_TIMEOUT="3",
    )
    try:
        backend.register("aws-1", runner.address, provider="aws")
        backend.wait_runners_healthy("aws-1")
        yield backend, runner
    finally:
        backend.stop()
        runner.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every reliability test belongs to `make soak`, whose sizes outgrow the suite's 300 s
    per-test timeout."""
    for item in items:
        if "tests/reliability/" in str(item.path):
            item.add_marker(pytest.mark.soak)
            if SOAK:
                item.add_marker(pytest.mark.timeout(3600))
