"""Helpers shared by the tests of the `iac-runner` executable (tests/test_stdio_*.py).

This module holds no tests; it is named like the stdio test modules so that it stays
with them. Everything here runs the real executable as a subprocess, without a shell.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import IAC_RUNNER, pids_matching, wait_for

RESPONSE_FIELDS = ["success", "output", "exit_code", "error_msg", "started_at", "ended_at"]
RFC3339_Z = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z\Z")
LOCK_INFO = ".terraform.tfstate.lock.info"

# iac-runner's exit statuses (documented in runner_stdio/cli.py).
EXIT_OK, EXIT_TOOL_FAILED, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3

# A configuration whose apply runs a long local-exec; {seconds} makes it unique.
SLOW_CONFIG = """\
resource "terraform_data" "slow" {{
  input = "slow"

  provisioner "local-exec" {{
    command = "echo starting; sleep {seconds}"
  }}
}}
"""


def unique_seconds() -> str:
    """A sleep duration no other process on the machine uses, e.g. "60.123456789":
    `sleep <it>` finds exactly the processes of one test."""
    return f"60.{secrets.randbelow(10**9):09d}"


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def response(self) -> dict[str, Any]:
        """The plain-mode response: exactly one JSON object on one line."""
        text = self.stdout.decode()
        assert text.endswith("\n") and text.count("\n") == 1, self.stdout[:500]
        obj = json.loads(text)
        assert isinstance(obj, dict)
        return obj

    @property
    def result(self) -> dict[str, Any]:
        """The stream-mode result event (the last event)."""
        assert self.events, self.stdout[:500]
        assert self.events[-1]["type"] == "result", self.events[-1]
        return self.events[-1]


def encode(request: dict[str, Any] | bytes) -> bytes:
    return request if isinstance(request, bytes) else json.dumps(request).encode()


def run_runner(
    request: dict[str, Any] | bytes,
    env: dict[str, str],
    *flags: str,
    timeout: float = 120,
) -> Result:
    """Run iac-runner to completion; in --stream mode, parse the events too."""
    start = time.monotonic()
    proc = subprocess.run(
        [IAC_RUNNER, *flags],
        input=encode(request),
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    if "--stream" in flags:
        result.events = parse_events(proc.stdout)
    return result


def start_runner(
    request: dict[str, Any] | bytes, env: dict[str, str], *flags: str
) -> subprocess.Popen[bytes]:
    """Start iac-runner with the request already written to its stdin (closed)."""
    proc = subprocess.Popen(
        [IAC_RUNNER, *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(encode(request))
    proc.stdin.close()
    proc.stdin = None  # so that communicate() does not flush it again
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[bytes, bytes]:
    """Wait for a process from start_runner; kill it (and fail) if it hangs."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return out, err


def parse_events(stdout: bytes) -> list[dict[str, Any]]:
    text = stdout.decode()
    assert text == "" or text.endswith("\n"), text[-200:]
    return [json.loads(line) for line in text.splitlines()]


def output_lines(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(seq, stream, line) for every line in the output events, in event order."""
    found = []
    for event in events:
        if event["type"] != "output":
            continue
        assert set(event) == {"type", "first_seq", "stream", "text"}, event
        assert isinstance(event["text"], str), event
        lines = event["text"].split("\n")
        assert event["stream"] in ("stdout", "stderr"), event
        found += [(event["first_seq"] + i, event["stream"], line) for i, line in enumerate(lines)]
    return found


def check_stream(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """Assert the stream's shape: started first, result last and only there, output
    in between with seq 1, 2, 3, ... without gaps. Returns output_lines(events)."""
    assert events, "no events"
    assert events[0]["type"] == "started", events[0]
    assert isinstance(events[0]["pid"], int) and events[0]["pid"] > 0
    assert RFC3339_Z.match(events[0]["started_at"]), events[0]
    assert events[-1]["type"] == "result", events[-1]
    assert [e["type"] for e in events[1:-1]] == ["output"] * (len(events) - 2)
    lines = output_lines(events)
    assert [seq for seq, _, _ in lines] == list(range(1, len(lines) + 1))
    result = events[-1]
    assert "output" not in result
    check_timestamps(result)
    return lines


def check_timestamps(obj: dict[str, Any]) -> None:
    assert RFC3339_Z.match(obj["started_at"]), obj["started_at"]
    assert RFC3339_Z.match(obj["ended_at"]), obj["ended_at"]
    started = datetime.fromisoformat(obj["started_at"])
    ended = datetime.fromisoformat(obj["ended_at"])
    offset = started.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert started <= ended


def check_response(response: dict[str, Any]) -> None:
    """Exactly the seed's six fields, with their types and RFC 3339 UTC timestamps."""
    assert list(response) == RESPONSE_FIELDS
    assert isinstance(response["success"], bool)
    assert isinstance(response["output"], str)
    assert isinstance(response["exit_code"], int) and not isinstance(response["exit_code"], bool)
    assert isinstance(response["error_msg"], str)
    check_timestamps(response)
    assert (response["error_msg"] == "") == response["success"], response


def assert_no_traceback(result: Result | tuple[bytes, bytes]) -> None:
    out, err = (result.stdout, result.stderr) if isinstance(result, Result) else result
    for text in (out, err):
        assert b"Traceback" not in text, text.decode(errors="replace")[-3000:]
        assert b"Exception ignored" not in text, text.decode(errors="replace")[-3000:]


class EventReader:
    """Reads NDJSON events from a running `iac-runner --stream`, with deadlines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.events: list[dict[str, Any]] = []
        self.eof = False

    def _read(self, deadline: float) -> bool:
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            if not sel.select(max(deadline - time.monotonic(), 0)):
                return False
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.eof = True
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        self.events += [json.loads(line) for line in complete]
        return True

    def until(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        """Read until an event satisfies `predicate`; return that event."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            if self.eof:
                raise AssertionError(f"stream ended without the event; got {self.events[-3:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such event within {timeout} s; got {self.events[-3:]}")
            self._read(deadline)

    def until_line(self, text: str, timeout: float = 30) -> dict[str, Any]:
        """Read until an output event carries a line containing `text`."""

        def has(event: dict[str, Any]) -> bool:
            if event["type"] != "output":
                return False
            return text in event["text"]

        return self.until(has, timeout)

    def rest(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Read to the end of the stream; return all events."""
        self.until(lambda e: e["type"] == "result", timeout)
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._read(deadline)
        assert self.eof and self.buf == b"", self.buf[:200]
        return self.events


def wait_for_pids(marker: str, timeout: float = 30) -> list[int]:
    """Wait until processes whose command line contains `marker` exist; their pids."""
    pids = wait_for(lambda: pids_matching(marker), timeout=timeout)
    assert isinstance(pids, list)
    return pids


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def fake_tool(directory: Path, body: str, name: str = "fake-terraform") -> str:
    """An executable Python script standing in for the tool (IAC_RUNNER_TERRAFORM_BIN)."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def terraform(work_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run terraform directly (not through iac-runner), e.g. to inspect state."""
    return subprocess.run(
        ["terraform", *args],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Test clean-up: make sure a started iac-runner does not outlive its test."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
