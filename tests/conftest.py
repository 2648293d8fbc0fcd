"""Shared fixtures: the environment real tools run in, and paths to the project's executables."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

BIN = Path(sys.executable).parent
IAC_RUNNER = str(BIN / "iac-runner")
IAC_RUNNER_SERVER = str(BIN / "iac-runner-server")
IAC_BACKEND = str(BIN / "iac-backend")
GRPCURL = str(BIN / "grpcurl")

OFFLINE_CONFIG = """\
terraform {
  required_version = ">= 1.5"
}

variable "greeting" {
  type    = string
  default = "hello"
}

resource "terraform_data" "example" {
  input = var.greeting

  provisioner "local-exec" {
    command = "echo provisioned ${self.input}"
  }
}

output "greeting" {
  value = terraform_data.example.output
}
"""


def skip_unless_strict(reason: str) -> NoReturn:
    """Skip the calling test because this machine lacks what it needs (root, a service, a
    tool), saying what. Under IAC_TEST_STRICT=1 (set by .ci/run, where everything is
    provided) the same reason fails the test instead: CI never passes by skipping."""
    if os.environ.get("IAC_TEST_STRICT", "") not in ("", "0"):
        pytest.fail(f"IAC_TEST_STRICT=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def tf_cli_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tfcli") / "empty.tfrc"
    path.write_text("")
    return str(path)


@pytest.fixture
def tool_env(tf_cli_config: str) -> Iterator[dict[str, str]]:
    """Environment for processes that run terraform: independent of the machine's
    TF_CLI_CONFIG_FILE and PYTHONUNBUFFERED settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.pop("PYTHONUNBUFFERED", None)
    env["TF_CLI_CONFIG_FILE"] = tf_cli_config
    env["CHECKPOINT_DISABLE"] = "1"
    yield env


@pytest.fixture
def tf_dir(tmp_path: Path) -> Path:
    """A directory holding an offline terraform configuration."""
    d = tmp_path / "config"
    d.mkdir()
    (d / "main.tf").write_text(OFFLINE_CONFIG)
    return d


def pids_alive(pids: list[int]) -> list[int]:
    """The pids among `pids` that still exist and are not zombies."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def pids_matching(fragment: str) -> list[int]:
    """Pids whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline:
            found.append(int(entry.name))
    return pids_alive(found)


# -- the reliability tests' tally (tests/reliability/harness.Counter) ------------------------
# Under pytest-xdist each worker counts its own tests; the controller, which runs no test
# and never loads tests/reliability/conftest.py, adds the workers' counts up and prints them.
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.reliability.harness import Counter

        workeroutput["reliability_counts"] = dict(Counter.totals)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    from tests.reliability.harness import Counter

    for what, n in getattr(node, "workeroutput", {}).get("reliability_counts", {}).items():
        Counter.add(what, n)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.reliability.harness import SOAK, Counter

    if not Counter.totals:
        return
    terminalreporter.section(f"reliability ({'soak' if SOAK else 'quick'} profile)")
    for what, n in sorted(Counter.totals.items()):
        terminalreporter.write_line(f"{what}: {n}")
