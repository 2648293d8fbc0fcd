"""The runner's domain: start, follow, cancel and describe runs. Knows nothing of gRPC.

Each run spawns `iac-runner --stream` in its own process group and relays its events
(see runs.py); what a request may ask is checked first (requests.py). Errors are
`RunnerError`s with a kind the transport maps to a status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from protos.iacrunner.v1 import runner_pb2 as pb
from runner_server import __version__, metrics, workspace
from runner_server.config import ServerConfig
from runner_server.journal import Journal, Record
from runner_server.requests import Prepared, RunnerError, check_channel, prepare
from runner_server.runs import ProtocolError, RetentionError, Run, add_note
from runner_server.state_relay import StateRelay
from runner_server.toolinfo import ToolInfo, tools_env
from runner_server.unsaved_state import UnsavedState
from runner_stdio.protocol import (
    now_iso,
)

log = logging.getLogger("iac_runner_server")

# Reported in GetInfo: a backend sends runs that need them only to runners that have them.
FEATURES = ["stdout_file", "verify_sha256", "typed_outcome"]
# iac-runner's outcome strings (its JSON is for people too) as the proto's enum.
OUTCOMES: dict[str, pb.Outcome] = {
    "succeeded": pb.OUTCOME_SUCCEEDED,
    "failed": pb.OUTCOME_FAILED,
    "canceled": pb.OUTCOME_CANCELED,
    "timed_out": pb.OUTCOME_TIMED_OUT,
    "killed": pb.OUTCOME_KILLED,
    "refused": pb.OUTCOME_REFUSED,
    "error": pb.OUTCOME_ERROR,
}


def outcome_name(outcome: pb.Outcome) -> str:
    """`succeeded`, `timed_out`, ...: the enum as iac-runner and the metrics say it."""
    return pb.Outcome.Name(outcome).removeprefix("OUTCOME_").lower()


# Terraform's state travels in one gRPC message (of at most 128 MiB).
MAX_STATE_BYTES = 100 * 1024 * 1024


class RunnerService:
    def __init__(self, config: ServerConfig, tools: list[ToolInfo]) -> None:
        self.config = config
        self.tools = tools
        self.runs: dict[str, Run] = {}
        self.active = 0
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._spare: asyncio.subprocess.Process | None = None
        self._refill: asyncio.Task[None] | None = None
        self.state = StateRelay(config.state_hold, MAX_STATE_BYTES)
        self.journal = Journal(config.workspace_root)
        self.unsaved = UnsavedState(config, self.journal, self.state, self._background)

    # -- Execute ---------------------------------------------------------------
    async def start(self, req: pb.ExecuteRequest) -> Run:
        """Validate, reserve a slot, unpack the workspace and spawn iac-runner."""
        if self.draining:
            raise RunnerError("unavailable", "runner is draining: it accepts no new runs")
        prepared = prepare(req, self.config, self.tools, self.runs, self.journal)
        if self.active >= self.config.max_concurrent:
            raise RunnerError(
                "exhausted",
                f"runner is full: {self.active}/{self.config.max_concurrent} runs active",
            )
        run = Run(
            run_id=prepared.run_id,
            tool=req.tool,
            command=req.command,
            work_dir=prepared.work_dir,
            retention_bytes=self.config.retention_bytes,
            tool_version=prepared.tool.version,
            started_at=now_iso(),
        )
        # Reserve the slot and the id before the first await.
        self.runs[run.run_id] = run
        self.active += 1
        self._idle.clear()
        metrics.ACTIVE_RUNS.inc()
        if req.state_channel:
            env = self.state.env_for(run.run_id, req.state_channel)
            prepared.body["env_vars"].update(env)
            prepared.body["sensitive_env"].append("TF_HTTP_PASSWORD")
        try:
            await asyncio.to_thread(self._make_work_dir, prepared)
            run.proc = await self._take_runner_process()
        except BaseException as exc:
            self.runs.pop(run.run_id, None)
            self.state.close_run(run.run_id)
            self.journal.remove(run.run_id)
            self._release_slot()
            if isinstance(exc, workspace.Mismatch):
                raise RunnerError("precondition", str(exc)) from None
            if isinstance(exc, workspace.WorkspaceError):
                raise RunnerError("invalid", str(exc)) from None
            if isinstance(exc, OSError):
                raise RunnerError("precondition", f"could not start iac-runner: {exc}") from None
            raise
        metrics.RUNS_STARTED.labels(req.tool, req.command).inc()
        log.info(
            json.dumps(
                {
                    "event": "run_start",
                    "run_id": run.run_id,
                    "tool": run.tool,
                    "command": run.command,
                    "tool_version": run.tool_version,
                }
            )
        )
        self._background(self._supervise(run, prepared))
        return run

    # -- iac-runner processes -----------------------------------------------------------
    # A Python start with its imports costs about as much as `terraform version` itself, so
    # one iac-runner is kept started and waiting for its request on stdin: an Execute
    # takes it and a new spare is started in the background.
    async def _spawn_runner_process(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self.config.runner_binary(),
            "--stream",
            "--workspace-root",
            self.config.workspace_root,
            "--grace",
            str(self.config.grace),
            "--default-timeout",
            str(self.config.default_timeout),
            # iac-runner refuses what the runner does not accept, too.
            *(["--accept", ",".join(self.config.accept)] if self.config.accept else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=256 * 1024,
            env={**os.environ, **tools_env(self.tools)},
        )

    async def _take_runner_process(self) -> asyncio.subprocess.Process:
        spare, self._spare = self._spare, None
        if spare is None or spare.returncode is not None:
            spare = await self._spawn_runner_process()
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self.prepare_spare())
        return spare

    async def prepare_spare(self) -> None:
        if self.draining or self._spare is not None:
            return
        try:
            self._spare = await self._spawn_runner_process()
        except OSError as exc:
            log.warning(json.dumps({"event": "spare_failed", "error": str(exc)}))

    async def close(self) -> None:
        """Stop the spare iac-runner (it has no tool running)."""
        if self._refill is not None:
            self._refill.cancel()
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None:
            spare.kill()
            await spare.wait()

    def _make_work_dir(self, prepared: Prepared) -> None:
        request = prepared.request
        self.journal.add(
            Record(prepared.run_id, prepared.work_dir, request.cleanup, request.state_channel)
        )
        existed = os.path.isdir(prepared.work_dir)
        workspace.make_private_dirs(self.config.workspace_root, prepared.work_dir)
        if prepared.request.workspace:
            try:
                workspace.unpack(prepared.request.workspace, prepared.work_dir, self.config.limits)
            except BaseException:
                # Half an archive (the disk filled up, an entry was refused) must not stay
                # behind: on a full disk it would make every later run fail too.
                if not existed:
                    workspace.remove(self.config.workspace_root, prepared.work_dir)
                raise
        for rel, expected in request.verify_sha256.items():
            found = workspace.sha256_of(prepared.work_dir, rel)
            if found != expected.lower():
                if request.cleanup:
                    workspace.remove(self.config.workspace_root, prepared.work_dir)
                raise workspace.Mismatch(
                    f"{rel} is not the file this run was given: its SHA-256 is "
                    f"{found or '(missing)'}, expected {expected.lower()}"
                )

    def _release_slot(self) -> None:
        self.active -= 1
        metrics.ACTIVE_RUNS.dec()
        if self.active == 0:
            self._idle.set()

    async def _supervise(self, run: Run, prepared: Prepared) -> None:
        proc = run.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        event: dict[str, Any] | None = None
        problem = ""
        try:
            proc.stdin.write(json.dumps(prepared.body).encode())
            await proc.stdin.drain()
            proc.stdin.close()
            event = await run.pump(proc.stdout)
        except ProtocolError as exc:
            problem = str(exc)
            run.cancel(force=True)
        except (BrokenPipeError, ConnectionResetError):
            problem = "iac-runner closed its input early"
        returncode = await proc.wait()
        if run.tool_pid:
            # Whatever happened to iac-runner, nothing of the tool outlives the run.
            try:
                os.killpg(run.tool_pid, signal.SIGKILL)
            except OSError:
                pass
        result = self._result(event, returncode, problem, run)
        if prepared.request.collect:
            artifacts, note = await asyncio.to_thread(
                workspace.collect, run.work_dir, list(prepared.request.collect), self.config.limits
            )
            for path, content in artifacts:
                result.artifacts.add(path=path, content=content)
            if note:
                add_note(result, note)
        keep = False
        if prepared.request.state_channel:
            keep = not await self.unsaved.recover(run, result)
            self.state.close_run(run.run_id)
        await asyncio.to_thread(self._clean_up, run, prepared.request.cleanup and not keep)
        await run.finish(result)
        self._release_slot()
        duration = time.monotonic() - run.started_monotonic
        metrics.RUNS_FINISHED.labels(run.tool, run.command, outcome_name(result.outcome)).inc()
        metrics.RUN_DURATION.labels(run.tool, run.command).observe(duration)
        metrics.LINES_STREAMED.inc(run.last_seq)
        log.info(
            json.dumps(
                {
                    "event": "run_end",
                    "run_id": run.run_id,
                    "tool": run.tool,
                    "command": run.command,
                    "duration_s": round(duration, 3),
                    "outcome": outcome_name(result.outcome),
                    "exit_code": result.exit_code,
                    "lines": run.last_seq,
                }
            )
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.retention_seconds, self._forget, run.run_id, run)

    def _clean_up(self, run: Run, remove: bool) -> None:
        if remove:
            workspace.remove(self.config.workspace_root, run.work_dir)
        self.journal.remove(run.run_id)

    # -- what a killed server left -----------------------------------------------------
    def recover_leftovers(self) -> None:
        """Runs a previous server was executing when it died (see UnsavedState)."""
        self.unsaved.recover_leftovers(self.runs)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, run_id: str, run: Run) -> None:
        if self.runs.get(run_id) is run:
            del self.runs[run_id]

    @staticmethod
    def _result(event: dict[str, Any] | None, returncode: int, problem: str, run: Run) -> pb.Result:
        if event is not None and not problem:
            return pb.Result(
                success=bool(event.get("success")),
                exit_code=int(event.get("exit_code", -1)),
                error_msg=str(event.get("error_msg", "")),
                started_at=str(event.get("started_at", run.started_at)),
                ended_at=str(event.get("ended_at", now_iso())),
                outcome=OUTCOMES.get(str(event.get("outcome", "")), pb.OUTCOME_UNSPECIFIED),
                output_truncated=bool(event.get("output_truncated")),
                tool_version=run.tool_version,
            )
        if not problem:
            how = (
                f"killed by {signal.Signals(-returncode).name}"
                if returncode < 0
                else f"exit code {returncode}"
            )
            problem = f"iac-runner ended without a result ({how})"
        return pb.Result(
            success=False,
            exit_code=-1,
            error_msg=problem,
            started_at=run.started_at,
            ended_at=now_iso(),
            outcome=pb.OUTCOME_ERROR,
            tool_version=run.tool_version,
        )

    def started_event(self, run: Run) -> pb.ExecuteEvent:
        return pb.ExecuteEvent(
            started=pb.Started(
                run_id=run.run_id,
                runner_id=self.config.runner_id,
                started_at=run.started_at,
                tool_version=run.tool_version,
            )
        )

    async def events(
        self, run: Run, from_seq: int = 1, *, packed: bool = False
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """started, then output batches from `from_seq` (text blocks when `packed`), then
        the result."""
        yield self.started_event(run)
        try:
            async for batch in run.follow(from_seq, packed=packed):
                yield pb.ExecuteEvent(output=batch)
        except RetentionError as exc:
            raise RunnerError("out_of_range", str(exc)) from None
        yield pb.ExecuteEvent(result=await run.wait())

    # -- Attach / Cancel / GetInfo --------------------------------------------------
    async def attach(self, run_id: str, state_channel: str) -> Run:
        run = self.get(run_id)
        if state_channel:
            check_channel(state_channel)
            await self.state.rebind(run_id, state_channel)
        return run

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise RunnerError("not_found", f"no run {run_id!r} on this runner")
        return run

    def cancel(self, run_id: str, *, force: bool) -> pb.CancelStatus:
        run = self.get(run_id)
        if run.finished:
            return pb.CANCEL_STATUS_ALREADY_FINISHED
        run.cancel(force=force)
        return pb.CANCEL_STATUS_CANCELING

    def info(self) -> pb.RunnerInfo:
        return pb.RunnerInfo(
            runner_id=self.config.runner_id,
            labels=self.config.labels,
            tools=[
                pb.Tool(name=t.name, version=t.version, path=t.path, is_default=t.is_default)
                for t in self.tools
            ],
            max_concurrent=self.config.max_concurrent,
            active=self.active,
            draining=self.draining,
            version=__version__,
            accept=self.config.accept,
            active_runs=[r.run_id for r in self.runs.values() if not r.finished],
            features=FEATURES,
        )

    # -- drain -------------------------------------------------------------------------
    def cancel_all(self, *, force: bool) -> None:
        for run in self.runs.values():
            if not run.finished:
                run.cancel(force=force)

    async def drain(self, timeout: float) -> None:
        """Refuse new runs, let active ones finish up to `timeout`, then cancel them."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            self.cancel_all(force=False)
            await self._idle.wait()

    async def wait_idle(self) -> None:
        await self._idle.wait()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
