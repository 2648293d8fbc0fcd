"""Run one tool command: spawn it without a shell, pump its output, stop it on request.

The tool runs in its own session (process group). Cancellation is an escalation on
that group: SIGINT (terraform stops cleanly and releases its state lock), after
`grace` seconds SIGTERM, after `KILL_AFTER` more seconds SIGKILL. Whatever ends the
run, the group is SIGKILLed afterwards so no child of the tool survives it; a small
guard process does the same if `iac-runner` itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time

from runner_stdio.output import STREAMS, LineSplitter
from runner_stdio.protocol import FORBIDDEN_ENV, Request, now_iso
from runner_stdio.tools import ToolSpec

TYPE_CHECKING = False  # typing itself costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Protocol

    class LineSink(Protocol):
        def lines(self, stream: str, lines: list[str]) -> None: ...


READ_SIZE = 64 * 1024
KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL
# After the tool exits, how long to keep reading output that leftover children still hold.
DRAIN_AFTER_EXIT = 2.0
# Signals that ask iac-runner to cancel: the first is graceful, a second one forces.
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORCE_SIGNAL = signal.SIGUSR1  # skip the grace period at once


class Outcome:
    __slots__ = ("ended_at", "error_msg", "exit_code", "pid", "started_at", "status")

    def __init__(
        self,
        exit_code: int,
        status: str,  # "succeeded" | "failed" | "canceled" | "timed_out" | "killed"
        error_msg: str,
        started_at: str,
        ended_at: str,
        pid: int = 0,
    ) -> None:
        self.exit_code = exit_code
        self.status = status
        self.error_msg = error_msg
        self.started_at = started_at
        self.ended_at = ended_at
        self.pid = pid

    @property
    def success(self) -> bool:
        return self.status == "succeeded"


def tool_environment(spec: ToolSpec, env_vars: dict[str, str]) -> dict[str, str]:
    """The runner's environment without its own settings and secrets (IAC_*) or
    loader hooks, then the tool's automation defaults, then the request's variables."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("IAC_") and k not in FORBIDDEN_ENV
    }
    env.update(spec.env)
    env.update(env_vars)
    return env


def _start_guard(pgid: int) -> tuple[int, int]:
    """Fork a guard that SIGKILLs the tool's process group once iac-runner is gone.

    It waits for EOF on a pipe only this process holds open, so it fires however
    iac-runner ends, SIGKILL included. Returns (guard pid, write end of the pipe).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the guard
        try:
            # The guard shares iac-runner's command line, so `pkill -USR1 iac-runner` and
            # the like reach it too: it ignores them all (SIGUSR1 would otherwise end it)
            # and drops the wakeup fd it inherited, which it closes below.
            signal.set_wakeup_fd(-1)
            for sig in (*CANCEL_SIGNALS, FORCE_SIGNAL):
                signal.signal(sig, signal.SIG_IGN)
            os.close(write_fd)
            os.closerange(3, read_fd)
            os.closerange(read_fd + 1, 1024)
            while os.read(read_fd, 1):
                pass
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(read_fd)
    return pid, write_fd


class Execution:
    """One run of the tool, driven by a select loop over its pipes, signals and deadlines."""

    def __init__(
        self,
        request: Request,
        spec: ToolSpec,
        binary: str,
        work_dir: str | None,
        sink: LineSink,
        *,
        timeout: float,
        grace: float,
        on_start: object = None,
    ) -> None:
        self.request = request
        self.spec = spec
        self.binary = binary
        self.work_dir = work_dir
        self.sink = sink
        self.timeout = timeout
        self.grace = grace
        self.on_start = on_start
        self.splitter = LineSplitter(request.secrets())
        self._signals: list[int] = []
        self._stage = 0  # 0 running, 1 SIGINT sent, 2 SIGTERM sent, 3 SIGKILL sent
        self._stage_deadline = float("inf")
        self._reason = ""  # "canceled" | "timed_out"
        self._last_signal = ""

    # -- signals ---------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _signal_group(self, pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(OSError):
            os.killpg(pgid, sig)
        self._last_signal = sig.name

    def _escalate(self, pgid: int, now: float, *, force: bool = False) -> None:
        if force or self._stage == 2:
            self._signal_group(pgid, signal.SIGKILL)
            self._stage, self._stage_deadline = 3, float("inf")
        elif self._stage == 0:
            self._signal_group(pgid, signal.SIGINT)
            self._stage, self._stage_deadline = 1, now + self.grace
        elif self._stage == 1:
            self._signal_group(pgid, signal.SIGTERM)
            self._stage, self._stage_deadline = 2, now + KILL_AFTER

    def _handle_signals(self, pgid: int, now: float) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            force = signum == FORCE_SIGNAL or self._reason != ""
            if not self._reason:
                self._reason = "canceled"
            if self._stage < 3:
                self._escalate(pgid, now, force=force)

    # -- the run ---------------------------------------------------------------
    def run(self) -> Outcome:
        started_at = now_iso()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        handled = (*CANCEL_SIGNALS, FORCE_SIGNAL, signal.SIGCHLD)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        tmp = None
        cwd = self.work_dir
        if cwd is None:
            import tempfile  # only here: it pulls in shutil and random

            tmp = tempfile.TemporaryDirectory(prefix="iac-runner-")
            cwd = tmp.name
        stdout: int = subprocess.PIPE
        try:
            if self.request.stdout_file:
                # The tool's stdout as a file in work_dir (`show -json`'s document), not as
                # output lines: never followed through a link, private to the runner user.
                stdout = os.open(
                    os.path.join(cwd, self.request.stdout_file),
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            proc = subprocess.Popen(  # argv list, no shell
                [self.binary, self.request.command, *self.request.args],
                cwd=cwd,
                env=tool_environment(self.spec, self.request.env_vars),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                # What the run writes (a saved plan and state hold secrets) is the
                # runner user's alone: files 0600, directories 0700.
                umask=0o077,
            )
            guard_pid, guard_fd = _start_guard(proc.pid)
            try:
                if callable(self.on_start):
                    self.on_start(proc.pid, started_at)
                returncode = self._pump(proc, wake_r)
            finally:
                # No child of the tool outlives the run.
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                os.close(guard_fd)
                os.waitpid(guard_pid, 0)
        finally:
            if stdout != subprocess.PIPE:
                os.close(stdout)
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in previous.items():
                signal.signal(s, handler)
            os.close(wake_r)
            os.close(wake_w)
            if tmp is not None:
                tmp.cleanup()
        outcome = self._outcome(returncode, started_at, now_iso(), proc.pid)
        outcome.error_msg = self.splitter.mask(outcome.error_msg)
        return outcome

    def _pump(self, proc: subprocess.Popen[bytes], wake_r: int) -> int:
        assert proc.stderr is not None
        sel = selectors.DefaultSelector()
        pipes = {proc.stderr.fileno(): "stderr"}
        if proc.stdout is not None:
            pipes[proc.stdout.fileno()] = "stdout"
        for fd in pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        start = time.monotonic()
        run_deadline = start + self.timeout if self.timeout > 0 else float("inf")
        drain_deadline = float("inf")
        returncode: int | None = None
        sink_lines = self.sink.lines
        feed = self.splitter.feed
        try:
            # Until the tool has exited, even if it closed its pipes early: the deadlines
            # and signals must still be handled while it runs.
            while pipes or returncode is None:
                now = time.monotonic()
                wait = min(run_deadline, self._stage_deadline, drain_deadline) - now
                events = sel.select(None if wait == float("inf") else max(wait, 0))
                for key, _ in events:
                    fd = key.fd
                    if fd == wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                        continue
                    try:
                        data = os.read(fd, READ_SIZE)
                    except BlockingIOError:
                        continue
                    stream = pipes[fd]
                    if data:
                        sink_lines(stream, feed(stream, data))
                    else:
                        sel.unregister(fd)
                        del pipes[fd]
                        sink_lines(stream, self.splitter.flush(stream))
                now = time.monotonic()
                self._handle_signals(proc.pid, now)
                if now >= run_deadline and not self._reason:
                    self._reason = "timed_out"
                    self._escalate(proc.pid, now)
                elif now >= self._stage_deadline:
                    self._escalate(proc.pid, now)
                if returncode is None:
                    returncode = proc.poll()
                    if returncode is not None:
                        # Leftover children may hold the pipes open: stop them, drain briefly.
                        with contextlib.suppress(OSError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        drain_deadline = now + DRAIN_AFTER_EXIT
                if now >= drain_deadline:
                    break
        finally:
            sel.close()
            for stream in STREAMS:
                sink_lines(stream, self.splitter.flush(stream))
            if proc.stdout is not None:
                proc.stdout.close()
            proc.stderr.close()
        return proc.wait() if returncode is None else returncode

    def _outcome(self, returncode: int, started_at: str, ended_at: str, pid: int) -> Outcome:
        exit_code = 128 - returncode if returncode < 0 else returncode
        tool = self.spec.name
        if self._reason:
            how = {
                0: "",
                1: f"{tool} stopped after SIGINT",
                2: f"{tool} terminated with SIGTERM after the {self.grace:g} s grace period",
                3: f"{tool} killed with SIGKILL",
            }[self._stage]
            if self._reason == "timed_out":
                status, head = "timed_out", f"timed out after {self.timeout:g} s"
            else:
                status, head = ("killed" if self._stage == 3 else "canceled"), "canceled"
            msg = f"{head}: {how} (exit code {exit_code})" if how else head
            return Outcome(exit_code, status, msg, started_at, ended_at, pid)
        if returncode == 0:
            return Outcome(0, "succeeded", "", started_at, ended_at, pid)
        if returncode < 0:
            msg = f"{tool} was killed by signal {signal.Signals(-returncode).name}"
            return Outcome(exit_code, "killed", msg, started_at, ended_at, pid)
        msg = f"{tool} {self.request.command} exited with code {exit_code}"
        if self.splitter.first_error:  # the tool's own words (already masked)
            msg = f"{msg}: {self.splitter.first_error}"
        return Outcome(exit_code, "failed", msg, started_at, ended_at, pid)
