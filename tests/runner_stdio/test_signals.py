"""Timeouts, cancellation and clean-up: real terraform running a long local-exec
(`sleep 60.<unique>`), and small fake tools where a test needs a tool that ignores
SIGINT/SIGTERM. After every run no process of the tool may be left, and terraform's
state must be usable (no lock held)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pids_alive, pids_matching, wait_for
from tests.runner_stdio.helpers import (
    EXIT_OK,
    EXIT_TOOL_FAILED,
    LOCK_INFO,
    SLOW_CONFIG,
    EventReader,
    assert_no_traceback,
    check_response,
    check_stream,
    children,
    fake_tool,
    finish,
    kill_quietly,
    parse_events,
    run_runner,
    start_runner,
    terraform,
    unique_seconds,
    wait_for_pids,
)

GRACE = 2  # --grace for these tests: small, so escalation is quick


def slow_request(work_dir: Path, timeout: float = 120) -> dict[str, Any]:
    return {
        "tool": "terraform",
        "work_dir": str(work_dir),
        "command": "apply",
        "args": ["-auto-approve", "-no-color"],
        "env_vars": {},
        "timeout": timeout,
    }


@pytest.fixture
def slow_tf(tmp_path: Path, tool_env: dict[str, str]) -> Iterator[tuple[Path, str]]:
    """An initialised config whose apply runs `sleep <unique>`; returns (dir, marker)."""
    seconds = unique_seconds()
    work = tmp_path / "slow"
    work.mkdir()
    (work / "main.tf").write_text(SLOW_CONFIG.format(seconds=seconds))
    init = run_runner({"tool": "terraform", "work_dir": str(work), "command": "init"}, tool_env)
    assert init.status == EXIT_OK, init.stdout
    marker = f"sleep {seconds}"
    yield work, marker
    # Whatever happened in the test, leave nothing behind.
    for pid in pids_matching(marker):
        os.kill(pid, signal.SIGKILL)


def assert_state_consistent(work: Path, env: dict[str, str], *, resource_saved: bool = True):
    """Terraform released its lock and saved the resource (tainted) it was creating."""
    assert not (work / LOCK_INFO).exists()
    state = terraform(work, env, "state", "list")
    assert state.returncode == 0, state.stderr
    if resource_saved:
        assert state.stdout.split() == ["terraform_data.slow"]
    plan = terraform(work, env, "plan", "-lock-timeout=0s", "-no-color", "-input=false")
    assert plan.returncode == 0, plan.stderr


def assert_gone(marker: str, *pids: int) -> None:
    """No process of the run is left (SIGKILL is asynchronous: allow a moment)."""
    wait_for(lambda: not pids_matching(marker) and not pids_alive(list(pids)), timeout=5)


# -- timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_timeout_stops_long_local_exec(tool_env, slow_tf, stream):
    work, marker = slow_tf
    timeout = 5
    flags = ["--grace", str(GRACE)] + (["--stream"] if stream else [])
    start = time.monotonic()
    proc = start_runner(slow_request(work, timeout), tool_env, *flags)
    try:
        sleeps = wait_for_pids(marker, timeout=timeout)
        out, err = finish(proc, timeout=timeout + GRACE + 30)
    finally:
        kill_quietly(proc)
    elapsed = time.monotonic() - start
    assert_no_traceback((out, err))
    assert proc.returncode == EXIT_TOOL_FAILED
    # terraform stops at the SIGINT: the answer comes well within timeout + grace.
    assert elapsed < timeout + GRACE + 2, elapsed
    expected = f"timed out after {timeout} s: terraform stopped after SIGINT (exit code 1)"
    if stream:
        events = parse_events(out)
        lines = [line for _, _, line in check_stream(events)]
        answer = events[-1]
        assert answer["outcome"] == "timed_out"
    else:
        answer = json.loads(out)
        check_response(answer)
        lines = answer["output"].splitlines()
    assert answer["success"] is False
    assert answer["error_msg"] == expected
    assert answer["exit_code"] == 1
    assert "Interrupt received." in lines
    assert any("starting" in line for line in lines)
    assert_gone(marker, *sleeps)
    assert_state_consistent(work, tool_env)


# -- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cancel_stops_terraform_cleanly(tool_env, slow_tf, sig, stream):
    """SIGINT or SIGTERM to iac-runner: terraform gets SIGINT, stops and releases its
    lock; a response is still written."""
    work, marker = slow_tf
    flags = ["--grace", str(GRACE)] + (["--stream"] if stream else [])
    proc = start_runner(slow_request(work), tool_env, *flags)
    try:
        sleeps = wait_for_pids(marker, timeout=30)
        os.kill(proc.pid, sig)
        sent = time.monotonic()
        out, err = finish(proc, timeout=GRACE + 30)
    finally:
        kill_quietly(proc)
    assert time.monotonic() - sent < GRACE + 2
    assert_no_traceback((out, err))
    assert proc.returncode == EXIT_TOOL_FAILED
    if stream:
        events = parse_events(out)
        check_stream(events)
        answer = events[-1]
        assert answer["outcome"] == "canceled"
    else:
        answer = json.loads(out)
        check_response(answer)
        assert "Interrupt received." in answer["output"]
    assert answer["success"] is False
    assert answer["error_msg"] == "canceled: terraform stopped after SIGINT (exit code 1)"
    assert_gone(marker, *sleeps)
    assert_state_consistent(work, tool_env)


def test_sigusr1_kills_terraform_at_once(tool_env, slow_tf):
    """SIGUSR1 skips the grace period: terraform is SIGKILLed mid-apply. It cannot save
    state then (the state file may be left empty), but it holds no lock afterwards."""
    work, marker = slow_tf
    proc = start_runner(slow_request(work), tool_env, "--grace", "60")
    try:
        sleeps = wait_for_pids(marker, timeout=30)
        os.kill(proc.pid, signal.SIGUSR1)
        sent = time.monotonic()
        out, err = finish(proc, timeout=30)
    finally:
        kill_quietly(proc)
    assert time.monotonic() - sent < 3
    assert_no_traceback((out, err))
    assert proc.returncode == EXIT_TOOL_FAILED
    answer = json.loads(out)
    check_response(answer)
    assert answer["exit_code"] == 137
    assert answer["error_msg"] == "canceled: terraform killed with SIGKILL (exit code 137)"
    assert_gone(marker, *sleeps)
    plan = terraform(work, tool_env, "plan", "-lock-timeout=0s", "-no-color", "-input=false")
    assert plan.returncode == 0, plan.stderr  # the lock is free
    assert not (work / LOCK_INFO).exists()


def test_sigkill_of_iac_runner_kills_the_tool_group(tool_env, slow_tf):
    """iac-runner itself SIGKILLed: its guard process kills terraform's process group."""
    work, marker = slow_tf
    proc = start_runner(slow_request(work), tool_env, "--stream")
    try:
        reader = EventReader(proc)
        tool_pid = reader.until(lambda e: e["type"] == "started")["pid"]
        sleeps = wait_for_pids(marker, timeout=30)
        family = children(proc.pid)
        assert tool_pid in family and len(family) == 2, family  # terraform and the guard
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert_gone(marker, *sleeps, *family)
    finally:
        kill_quietly(proc)
    assert proc.returncode == -signal.SIGKILL
    plan = terraform(work, tool_env, "plan", "-lock-timeout=0s", "-no-color", "-input=false")
    assert plan.returncode == 0, plan.stderr


def test_guard_survives_signals_sent_by_name(tool_env, slow_tf):
    """The guard shares iac-runner's command line, so `pkill -USR1 iac-runner` reaches
    it too: it must neither die nor complain, and still do its job afterwards."""
    work, marker = slow_tf
    proc = start_runner(slow_request(work), tool_env, "--stream")
    try:
        reader = EventReader(proc)
        tool_pid = reader.until(lambda e: e["type"] == "started")["pid"]
        sleeps = wait_for_pids(marker, timeout=30)
        (guard,) = [pid for pid in children(proc.pid) if pid != tool_pid]
        for sig in (signal.SIGUSR1, signal.SIGINT, signal.SIGTERM):
            os.kill(guard, sig)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert_gone(marker, *sleeps, tool_pid, guard)
        err = proc.communicate(timeout=10)[1]
    finally:
        kill_quietly(proc)
    assert_no_traceback((b"", err))
    assert err == b""


# -- escalation, with tools that ignore signals ------------------------------------------

STUBBORN_TOOL = """\
import os, signal, subprocess
IGNORED = {ignored!r}
for name in IGNORED:  # the child inherits SIG_IGN
    signal.signal(getattr(signal, name), signal.SIG_IGN)
child = subprocess.Popen(["sleep", "{seconds}"])


def note(signum, frame):
    # os.write, not print: a signal landing inside print() would re-enter its buffer.
    os.write(1, f"got {{signal.Signals(signum).name}}\\n".encode())


for name in IGNORED:
    signal.signal(getattr(signal, name), note)
os.write(1, b"ready\\n")
child.wait()
"""


def start_stubborn(
    tmp_path: Path, env: dict[str, str], ignored: list[str], *flags: str, timeout: float = 120
) -> tuple[Any, EventReader, str]:
    seconds = unique_seconds()
    tool = fake_tool(tmp_path, STUBBORN_TOOL.format(ignored=ignored, seconds=seconds))
    env = {**env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    request = {"tool": "terraform", "command": "apply", "timeout": timeout}
    proc = start_runner(request, env, "--stream", *flags)
    reader = EventReader(proc)
    reader.until_line("ready")
    wait_for(lambda: pids_matching(f"sleep {seconds}"), timeout=10)
    return proc, reader, f"sleep {seconds}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGTERM),
        (signal.SIGINT, signal.SIGUSR1),
        (None, signal.SIGUSR1),
    ],
    ids=["INT-INT", "TERM-TERM", "INT-TERM", "INT-USR1", "USR1"],
)
def test_second_signal_or_sigusr1_forces_kill(tool_env, tmp_path, first, second):
    """A tool that ignores SIGINT and SIGTERM, a grace period of 60 s: a second cancel
    signal (or SIGUSR1) SIGKILLs the group at once."""
    proc, reader, marker = start_stubborn(
        tmp_path, tool_env, ["SIGINT", "SIGTERM"], "--grace", "60"
    )
    try:
        if first is not None:
            os.kill(proc.pid, first)
            reader.until_line("got SIGINT", timeout=10)  # forwarded as SIGINT
        os.kill(proc.pid, second)
        sent = time.monotonic()
        events = reader.rest(timeout=30)
        proc.wait(timeout=10)
    finally:
        kill_quietly(proc)
    assert time.monotonic() - sent < 5
    check_stream(events)
    result = events[-1]
    assert result["outcome"] == "killed"
    assert result["error_msg"] == "canceled: terraform killed with SIGKILL (exit code 137)"
    assert result["exit_code"] == 137
    assert proc.returncode == EXIT_TOOL_FAILED
    assert_gone(marker)


@pytest.mark.parametrize(
    ("ignored", "expected", "lower", "upper"),
    [
        (
            ["SIGINT"],
            "terraform terminated with SIGTERM after the 1 s grace period (exit code 143)",
            1,
            4,
        ),
        (["SIGINT", "SIGTERM"], "terraform killed with SIGKILL (exit code 137)", 6, 9),
    ],
    ids=["SIGTERM-after-grace", "SIGKILL-5s-later"],
)
@pytest.mark.parametrize("trigger", ["cancel", "timeout"])
def test_escalation_after_the_grace_period(
    tool_env, tmp_path, ignored, expected, lower, upper, trigger
):
    """SIGINT first; SIGTERM after --grace; SIGKILL 5 s after that."""
    timeout = 1 if trigger == "timeout" else 120
    proc, reader, marker = start_stubborn(
        tmp_path, tool_env, ignored, "--grace", "1", timeout=timeout
    )
    try:
        if trigger == "cancel":
            os.kill(proc.pid, signal.SIGINT)
        reader.until_line("got SIGINT", timeout=10)
        since = time.monotonic()
        events = reader.rest(timeout=30)
        proc.wait(timeout=10)
    finally:
        kill_quietly(proc)
    elapsed = time.monotonic() - since
    assert lower - 0.5 < elapsed < upper, elapsed
    check_stream(events)
    head = "canceled" if trigger == "cancel" else "timed out after 1 s"
    assert events[-1]["error_msg"] == f"{head}: {expected}"
    if "SIGTERM" in ignored:
        assert any(line == "got SIGTERM" for _, _, line in check_stream(events))
    assert proc.returncode == EXIT_TOOL_FAILED
    assert_gone(marker)


# -- what the tool leaves behind ----------------------------------------------------------


def test_tool_that_closes_its_output_still_times_out(tool_env, tmp_path):
    """A tool that closes stdout and stderr but keeps running is still stopped at the
    timeout (iac-runner used to wait for it without a deadline once its pipes closed)."""
    seconds = unique_seconds()
    tool = fake_tool(
        tmp_path,
        f"import os\nprint('closing', flush=True)\nos.close(1)\nos.close(2)\n"
        f"os.execvp('sleep', ['sleep', '{seconds}'])\n",
    )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    request = {"tool": "terraform", "command": "version", "timeout": 1}
    result = run_runner(request, env, "--grace", "1", timeout=30)
    assert result.status == EXIT_TOOL_FAILED
    answer = result.response
    assert answer["output"] == "closing\n"
    assert (
        answer["error_msg"] == "timed out after 1 s: terraform stopped after SIGINT (exit code 130)"
    )
    assert result.elapsed < 5
    assert_gone(f"sleep {seconds}")


@pytest.mark.parametrize("holds_output", [True, False], ids=["holds-pipes", "detached-output"])
def test_background_child_of_the_tool_is_killed(tool_env, tmp_path, holds_output):
    """The tool exits 0 but leaves a background process: it is killed, whether or not it
    still holds the output pipes, and iac-runner answers promptly."""
    seconds = unique_seconds()
    redirect = "" if holds_output else ", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL"
    tool = fake_tool(
        tmp_path,
        f"import subprocess\nsubprocess.Popen(['sleep', '{seconds}']{redirect})\nprint('done')\n",
    )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    result = run_runner({"tool": "terraform", "command": "version"}, env, timeout=30)
    assert result.status == EXIT_OK
    assert result.response["output"] == "done\n"
    assert result.elapsed < 5
    assert_gone(f"sleep {seconds}")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_reader_of_stdout_gone(tool_env, tmp_path, stream):
    """The consumer closes iac-runner's stdout (e.g. the runner server died): iac-runner
    cannot answer, so it kills the tool's group and exits 3, without a traceback."""
    seconds = unique_seconds()
    if stream:  # chatty: iac-runner notices at its next event
        body = (
            "import subprocess\n"
            f"subprocess.Popen(['sleep', '{seconds}'], stdout=subprocess.DEVNULL)\n"
            "while True:\n    print('x' * 100, flush=True)\n"
        )
    else:  # quiet: iac-runner notices when it writes the response after a cancel
        body = (
            f"import os\nprint('hello', flush=True)\nos.execvp('sleep', ['sleep', '{seconds}'])\n"
        )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": fake_tool(tmp_path, body)}
    flags = ["--stream"] if stream else []
    proc = start_runner({"tool": "terraform", "command": "apply"}, env, *flags)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        if stream:
            EventReader(proc).until(lambda e: e["type"] == "output", timeout=20)
        sleeps = wait_for_pids(f"sleep {seconds}", timeout=20)
        proc.stdout.close()
        proc.stdout = None
        if not stream:
            os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        err = proc.stderr.read()
    finally:
        kill_quietly(proc)
    assert proc.returncode == 3
    assert_no_traceback((b"", err))
    assert_gone(f"sleep {seconds}", *sleeps)
