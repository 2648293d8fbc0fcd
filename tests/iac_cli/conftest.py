"""A platform of real processes for the `iac` CLI tests: two runner servers (provider=aws,
provider=gcp) and one backend on SQLite, shared by the whole CLI test session, and a helper
that runs the `iac` console script as a subprocess against it."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.fernet import Fernet

from tests.backend.platform import TOKEN, Backend, start_backend
from tests.procs import BIN, RunnerProcess, start_runner

IAC = str(BIN / "iac")
RUNNERS = {"aws-1": "provider=aws", "gcp-1": "provider=gcp"}


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        assert self.returncode == 0, self
        assert "Traceback" not in self.stderr, self.stderr
        return self


@dataclass
class Platform:
    backend: Backend
    runners: dict[str, RunnerProcess]
    home: Path
    # Every stdout and stderr `iac` printed in the session, to check secrets never show.
    transcript: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.backend.url

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of an `iac` process: this platform's URL and token, no config
        file of the developer's, no colour."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IAC_")}
        env.update(
            IAC_URL=self.url,
            IAC_TOKEN=TOKEN,
            XDG_CONFIG_HOME=str(self.home / "xdg"),
            HOME=str(self.home),
            NO_COLOR="1",
            COLUMNS="200",
        )
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def iac(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> Result:
        argv = [IAC, *args]
        proc = subprocess.run(
            argv,
            env=env if env is not None else self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.transcript += [proc.stdout, proc.stderr]
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> LiveProcess:
        argv = [IAC, *args]
        proc = subprocess.Popen(
            argv,
            env=env if env is not None else self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return LiveProcess(argv, proc, self.transcript)


class LiveProcess:
    """An `iac` process whose stdout and stderr are read line by line as they come."""

    def __init__(self, argv: list[str], proc: subprocess.Popen[str], transcript: list[str]) -> None:
        self.argv = argv
        self.proc = proc
        self.transcript = transcript
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=("out", proc.stdout), daemon=True),
            threading.Thread(target=self._pump, args=("err", proc.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put((name, line))
        self._lines.put((name, None))

    def wait_for_line(self, pattern: str, stream: str = "out", timeout: float = 60) -> str:
        """Collect output until a line of `stream` matches `pattern`; fail at the deadline."""
        for seen in self.collected(stream):
            if re.search(pattern, seen):
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} in {stream}: {self.out} {self.err}"
                )
            try:
                name, line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                if name == stream:
                    raise AssertionError(
                        f"{stream} ended before {pattern!r}: {self.out} {self.err}"
                    )
                continue
            (self.out if name == "out" else self.err).append(line)
            if name == stream and re.search(pattern, line):
                return line

    def collected(self, stream: str) -> list[str]:
        return list(self.out if stream == "out" else self.err)

    def finish(self, timeout: float = 120) -> Result:
        returncode = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        self._close_pipes()
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                (self.out if name == "out" else self.err).append(line)
        result = Result(self.argv, returncode, "".join(self.out), "".join(self.err))
        self.transcript += [result.stdout, result.stderr]
        return result

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def kill(self) -> None:
        """Clean-up: end the process if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        self._close_pipes()


def session_tool_env(tf_cli_config: str) -> dict[str, str]:
    """The `tool_env` fixture's environment (tests/conftest.py), for a session-wide platform."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.pop("PYTHONUNBUFFERED", None)
    env["TF_CLI_CONFIG_FILE"] = tf_cli_config
    env["CHECKPOINT_DISABLE"] = "1"
    return env


@pytest.fixture(scope="session")
def platform(tf_cli_config: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Two runner servers and a backend, the runners registered with `iac runners add`."""
    tmp = tmp_path_factory.mktemp("cli-platform")
    env = session_tool_env(tf_cli_config)
    runners: dict[str, RunnerProcess] = {}
    backend: Backend | None = None
    try:
        for name, label in RUNNERS.items():
            runners[name] = start_runner(tmp, env, "--label", label, "--grace", "2", name=name)
        backend = start_backend(
            tmp,
            env,
            f"sqlite:///{tmp / 'db' / 'iac.db'}",
            ENCRYPTION_KEY=Fernet.generate_key().decode(),
        )
        home = tmp / "home"
        home.mkdir()
        platform = Platform(backend, runners, home)
        for name, label in RUNNERS.items():
            platform.iac("runners", "add", name, runners[name].address, "--label", label).ok()
        backend.wait_runners_healthy(*runners)
        yield platform
    finally:
        if backend is not None:
            backend.stop()
        for runner in runners.values():
            runner.stop()


def run_id_from(text: str) -> int:
    match = re.search(r"iac runs approve (\d+)", text) or re.search(r"run (\d+)", text)
    assert match, text
    return int(match.group(1))


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    """Exit `code`, nothing on stdout, one `iac: error:` line on stderr, no traceback."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("iac: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == "", result.stdout


def json_of(result: Result) -> Any:
    return json.loads(result.ok().stdout)
