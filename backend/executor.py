"""One execution of a run's phase: its runner lease, each step's stream, the phase's end.

An execution starts from a claim (the dispatcher's) or an adoption (recovery's), holds the
claim's epoch (every write is fenced by it, `backend.store.executions`) and a lease on its
runner's slot. Each step is recorded before it starts (its runner-side id and where its
seq 1 lands in the run's log) and runs with `on_disconnect=CONTINUE`, so a broken stream
is re-attached from the last line received, and a backend that restarts (or another one,
once the heartbeat goes stale) re-attaches from the last stored line: no line is lost or
doubled. A runner that stays unreachable for `runner_lost_timeout` fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher
from backend.db import Database, database_lost
from backend.logs.hub import LogHub
from backend.logs.writer import LogWriter
from backend.models import RunStatus
from backend.plan_outcome import read_outcome
from backend.pool import Lease
from backend.runner_client import (
    RunGone,
    RunnerBusy,
    RunnerClient,
    RunnerError,
    RunnerRefused,
    RunnerUnreachable,
)
from backend.runner_ids import Phase, StepId
from backend.steps import PLAN_FILE, Step, build_workspace, phase_steps
from backend.store import executions, queue, run_transitions
from backend.store.executions import Fenced, Job, StepStart
from backend.store.queue import Claim
from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac.backend.executor")
RETRY_PAUSE = 0.5


@dataclass
class Execution:
    run_id: int
    epoch: int
    lease: Lease
    claim: Claim | None = None  # from a fresh claim (undone if the runner is full)
    task: asyncio.Task[None] | None = None
    runner_run_id: str = ""  # the step in flight
    client: RunnerClient | None = None
    canceled: str = ""  # the cancel mode already sent to the runner
    started: float = field(default_factory=time.monotonic)

    @property
    def runner(self) -> str:
        return self.lease.runner


class StepFailed(Exception):
    """A step could not run or did not succeed; `status` is how the run ends."""

    def __init__(self, status: RunStatus, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


class Executor:
    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        hub: LogHub,
        client_for: Callable[[str], Awaitable[RunnerClient | None]],
        *,
        backend_id: str,
        prefix: Callable[[], str],
        timeouts: dict[str, int],
        runner_lost_timeout: float,
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.hub = hub
        self.client_for = client_for
        self.backend_id = backend_id
        self.prefix = prefix
        self.timeouts = timeouts
        self.runner_lost_timeout = runner_lost_timeout

    async def run(self, execution: Execution, resume: bool) -> None:
        """Execute the phase to its end, or until the run is taken over; never raises but
        on cancellation (the backend stopping: the run goes on on its runner)."""
        run_id = execution.run_id
        writer: LogWriter | None = None
        flusher: asyncio.Task[None] | None = None
        try:
            async with self.db.session() as session:
                job = await executions.load_job(session, self.cipher, run_id)
            writer = LogWriter(self.db, self.hub, run_id, execution.epoch, job.run.last_seq)
            flusher = asyncio.create_task(writer.run())
            await self._phase(execution, writer, resume, job)
        except asyncio.CancelledError:
            raise
        except RunnerBusy as exc:
            await self._give_back(execution, f"runner {execution.runner} refused: {exc}")
        except StepFailed as exc:
            await self._finish(execution, exc.status, str(exc), exc.exit_code, writer)
        except Fenced:
            log.warning("run %s was taken over by another backend: stopping here", run_id)
        except Exception as exc:
            if database_lost(exc):
                # A restart or failover of the database, not a fault of the run, which goes
                # on on its runner: left claimed, recovery re-attaches it.
                log.warning("run %s: lost the database (%s); re-attaching later", run_id, exc)
                return
            log.exception("run %s failed in the backend", run_id)
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.flush()
            await self._finish(execution, RunStatus.FAILED, f"internal error: {exc}", None)
        finally:
            if flusher is not None:
                flusher.cancel()
            execution.lease.release()
            self.hub.close(run_id)

    async def _phase(self, execution: Execution, writer: LogWriter, resume: bool, job: Job) -> None:
        run_id = execution.run_id
        run, deployment, env = job.run, job.deployment, job.env
        phase = Phase.PLAN if run.status == RunStatus.RUNNING.value else Phase.APPLY
        steps = phase_steps(run.operation, phase)
        client = await self.client_for(execution.runner)
        if client is None:
            raise StepFailed(
                RunStatus.FAILED, f"runner {execution.runner!r} is no longer registered"
            )
        execution.client = client
        plan_file = self.cipher.unseal(run.plan_file) if run.plan_file else None
        workspace = await asyncio.to_thread(
            build_workspace, job.archive, plan_file if phase == Phase.APPLY else None
        )
        attempt = run.dispatch_count
        start = 0
        attach: tuple[str, int] | None = None
        if resume and run.runner_run_id:
            step_id = StepId.parse(run.runner_run_id)
            names = [s.name for s in steps]
            if step_id is None or step_id.phase != phase or step_id.step not in names:
                raise StepFailed(
                    RunStatus.FAILED,
                    f"cannot resume: {run.runner_run_id!r} is no step of this run's {phase} phase",
                )
            start, attempt = names.index(step_id.step), step_id.attempt
            attach = (run.runner_run_id, run.step_seq_offset)
        work_dir = StepId(self.prefix(), run.id, phase, attempt, "").work_dir
        plan_result: pb.Result | None = None
        artifacts: dict[str, bytes] = {}
        for index in range(start, len(steps)):
            step = steps[index]
            if attach is not None and index == start:
                await self._check_canceled(run_id)
                runner_run_id, offset = attach
                execution.runner_run_id = runner_run_id
                execution.lease.step(runner_run_id)
                result = await self._follow(execution, writer, runner_run_id, offset, None)
            else:
                runner_run_id = str(StepId(self.prefix(), run.id, phase, attempt, step.name))
                command = " ".join((deployment.tool, step.command, *step.args))
                writer.note(f"{phase} phase: {command} (runner {execution.runner})")
                offset = writer.last_seq  # no step is streaming: nothing arrives meanwhile

                async def begin(
                    session: AsyncSession, rid: str = runner_run_id, at: int = offset
                ) -> StepStart:
                    return await executions.begin_step(session, run_id, execution.epoch, rid, at)

                if await writer.flush(then=begin) == StepStart.CANCELED:
                    await self._check_canceled(run_id)
                execution.runner_run_id = runner_run_id
                execution.lease.step(runner_run_id)
                request = pb.ExecuteRequest(
                    run_id=runner_run_id,
                    tool=deployment.tool,
                    work_dir=work_dir,
                    command=step.command,
                    args=list(step.args),
                    env_vars=env.env_vars,
                    timeout=self.timeouts.get(run.operation, 3600),
                    sensitive_env=env.sensitive_env,
                    mask_values=env.mask_values,
                    workspace=workspace if step.name == "init" else b"",
                    collect=list(step.collect),
                    cleanup=step.cleanup,
                    on_disconnect=pb.CONTINUE,
                    tool_version=run.tool_version or "",
                    packed_output=True,
                    state_channel=self.backend_id,
                    stdout_file=step.stdout_file,
                )
                if step.name == "apply" and run.plan_sha256:
                    request.verify_sha256[PLAN_FILE] = run.plan_sha256
                result = await self._follow(
                    execution, writer, runner_run_id, offset, request, first=index == 0
                )
            if not step.succeeded(result):
                raise self._failure(execution, step, result)
            if step.name == "plan":
                plan_result = result
            elif step.name == "show":
                artifacts = {a.path: a.content for a in result.artifacts}
        # The runner is done with this run: its slot may take the next one already.
        execution.lease.release()
        if phase == Phase.PLAN:
            await self._plan_done(execution, job, plan_result, artifacts, writer)
        else:
            await self._finish(execution, RunStatus.SUCCEEDED, "", 0, writer)

    async def _check_canceled(self, run_id: int) -> None:
        async with self.db.session() as session:
            mode = await executions.cancel_mode(session, run_id)
        if mode:
            raise StepFailed(RunStatus.CANCELED, f"canceled ({mode}) between steps")

    @staticmethod
    def _failure(execution: Execution, step: Step, result: pb.Result) -> StepFailed:
        outcome = result.outcome
        if outcome in (pb.OUTCOME_CANCELED, pb.OUTCOME_KILLED) and execution.canceled:
            status = RunStatus.CANCELED
        elif outcome == pb.OUTCOME_TIMED_OUT:
            status = RunStatus.TIMED_OUT
        else:
            status = RunStatus.FAILED
        return StepFailed(
            status, f"{step.command}: {result.error_msg or 'failed'}", result.exit_code
        )

    async def _follow(
        self,
        execution: Execution,
        writer: LogWriter,
        runner_run_id: str,
        offset: int,
        request: pb.ExecuteRequest | None,
        *,
        first: bool = False,
    ) -> pb.Result:
        """Stream one step to its result: Execute (or Attach), re-attaching after a lost
        connection until `runner_lost_timeout` has passed without reaching the runner."""
        client = execution.client
        assert client is not None
        attaching = request is None
        lost_since: float | None = None
        last_error = ""
        busy_until = time.monotonic() + self.runner_lost_timeout
        while True:
            stream: AsyncIterator[pb.ExecuteEvent]
            if attaching:
                stream = client.attach(runner_run_id, writer.last_seq - offset + 1, self.backend_id)
            else:
                assert request is not None
                stream = client.execute(request)
            try:
                async for event in stream:
                    lost_since = None
                    kind = event.WhichOneof("event")
                    if kind == "output":
                        writer.add(offset, event.output)
                        if writer.backlogged:
                            # Store before reading on: the runner's stream (and so the
                            # tool's pipe) waits instead of this process's memory growing.
                            await writer.flush()
                    elif kind == "started":
                        attaching = True  # from now on, a broken stream is re-attached
                    elif kind == "result":
                        return event.result
                last_error = "the stream ended without a result"
            except RunnerBusy as exc:  # refused before it started: full or draining
                if first:
                    raise
                if time.monotonic() >= busy_until:
                    raise StepFailed(
                        RunStatus.FAILED, f"runner {execution.runner} refused: {exc}"
                    ) from None
                await asyncio.sleep(RETRY_PAUSE)
                continue
            except RunnerRefused as exc:
                raise StepFailed(
                    RunStatus.FAILED, f"runner {execution.runner} refused: {exc}"
                ) from None
            except RunGone:
                raise StepFailed(
                    RunStatus.FAILED,
                    f"runner {execution.runner} no longer knows run {runner_run_id} "
                    "(it restarted or forgot it)",
                ) from None
            except RunnerUnreachable as exc:
                last_error = str(exc)
                attaching = True  # the Execute may or may not have reached it: Attach says
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since > self.runner_lost_timeout:
                execution.lease.lost()
                raise StepFailed(
                    RunStatus.FAILED,
                    f"lost contact with runner {execution.runner} for more than "
                    f"{self.runner_lost_timeout:g} s ({last_error})",
                )
            await asyncio.sleep(RETRY_PAUSE)

    async def _plan_done(
        self,
        execution: Execution,
        job: Job,
        result: pb.Result | None,
        artifacts: dict[str, bytes],
        writer: LogWriter,
    ) -> None:
        """The plan phase succeeded: the run ends, or waits for approval or its apply, with
        what its artifacts say (`backend.plan_outcome`)."""
        outcome = await read_outcome(
            self.cipher, job.run.operation, result, artifacts, job.env.secrets()
        )
        for note in outcome.notes:
            writer.note(note)

        async def done(session: AsyncSession) -> None:
            await executions.finish_plan(
                session,
                job.run,
                execution.epoch,
                has_plan=outcome.has_plan,
                drift_detail=outcome.drift_detail,
                **outcome.values,
            )

        await writer.flush(then=done)  # the last lines, in the same transaction

    async def _give_back(self, execution: Execution, reason: str) -> None:
        """The runner refused the first step as full: undo the claim (the run keeps its
        place and its history) and give that runner nothing until its load changes."""
        execution.lease.full()
        if execution.claim is None:
            return
        try:
            async with self.db.session() as session:
                await queue.unclaim(session, execution.claim, reason)
        except Exception as exc:
            log.warning("run %s: could not undo its claim (%s)", execution.run_id, exc)

    async def _finish(
        self,
        execution: Execution,
        status: RunStatus,
        message: str,
        exit_code: int | None,
        writer: LogWriter | None = None,
    ) -> None:
        """End the run, its last lines stored in the same transaction (with `writer`)."""

        async def end(session: AsyncSession) -> None:
            await run_transitions.end(
                session, execution.run_id, status, message, exit_code=exit_code,
                in_epoch=execution.epoch,
            )  # fmt: skip

        try:
            if writer is not None:
                await writer.flush(then=end)
                return
            async with self.db.session() as session:
                await end(session)
        except Fenced:
            log.warning("run %s was taken over by another backend: not ending it", execution.run_id)
        except Exception as exc:
            if not database_lost(exc):
                raise
            log.warning("run %s: lost the database while ending it (%s)", execution.run_id, exc)

    async def signal_cancel(self, execution: Execution, mode: str) -> None:
        """Ask the runner to stop the step in flight (once per mode; force wins)."""
        if execution.canceled in (mode, "force"):
            return
        if execution.client is None or not execution.runner_run_id:
            return  # between steps: the execution checks before the next one
        execution.canceled = mode
        try:
            await execution.client.cancel(execution.runner_run_id, force=mode == "force")
        except RunnerError as exc:
            log.warning("cancel of run %s on %s: %s", execution.run_id, execution.runner, exc)
            execution.canceled = ""
