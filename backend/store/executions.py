"""What an execution of a run writes, each write fenced by the claim's epoch.

An execution holds the epoch of the claim it started from. A backend that adopts the run
(the executing one stopped sending heartbeats: it died, or was paused) bumps the epoch, so
every later write of the first execution matches no row: it gets `Fenced` and stops,
without storing a line twice or ending a run it no longer holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher
from backend.logs.batch import LogBatch
from backend.models import (
    ConfigVersion,
    Deployment,
    DriftStatus,
    LogChunk,
    NotifyEvent,
    Operation,
    Run,
    RunStatus,
    utcnow,
)
from backend.store import approval, drift, outbox, run_transitions
from backend.store import variables as variable_store
from backend.store.clock import db_now
from backend.store.runs import add_event, get_run
from backend.store.variables import RunEnvironment

RUNS = cast(Table, Run.__table__)
R = RUNS.c
LOG_CHUNKS = cast(Table, LogChunk.__table__)
EXECUTING = (RunStatus.RUNNING.value, RunStatus.APPLYING.value)


class Fenced(Exception):
    """The run was claimed again (adopted by another backend) since this execution's claim:
    the execution must stop and write nothing more."""


@dataclass
class Job:
    """What an execution needs from the database, read in one transaction."""

    run: Run
    deployment: Deployment
    archive: bytes
    env: RunEnvironment


async def load_job(session: AsyncSession, cipher: Cipher, run_id: int) -> Job:
    run = await get_run(session, run_id)
    deployment = await session.get(Deployment, run.deployment_id)
    archive = await session.scalar(
        select(ConfigVersion.archive).where(ConfigVersion.id == run.config_version_id)
    )
    assert deployment is not None and archive is not None
    env = await variable_store.run_environment(session, cipher, deployment)
    return Job(run, deployment, archive, env)


async def _still_mine(session: AsyncSession, run_id: int, epoch: int, **values: Any) -> None:
    result = await session.execute(
        update(RUNS).where(R.id == run_id, R.epoch == epoch).values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Fenced(f"run {run_id} was claimed again since epoch {epoch}")


async def store_chunk(session: AsyncSession, run_id: int, epoch: int, chunk: LogBatch) -> None:
    """Consecutive lines of the run's log, as one chunk (Fenced: not stored)."""
    await _still_mine(session, run_id, epoch, last_seq=chunk.last_seq, heartbeat_at=db_now(session))
    await session.execute(
        insert(LOG_CHUNKS).values(
            run_id=run_id, first_seq=chunk.first_seq, last_seq=chunk.last_seq, data=chunk.text
        )
    )


async def check_claim(session: AsyncSession, run_id: int, epoch: int) -> None:
    """Fenced unless the run is still claimed in `epoch` (and marks it alive)."""
    await _still_mine(session, run_id, epoch, heartbeat_at=db_now(session))


class StepStart(Enum):
    STARTED = "started"
    CANCELED = "canceled"  # a cancel came first: do not start it


async def begin_step(
    session: AsyncSession, run_id: int, epoch: int, runner_run_id: str, seq_offset: int
) -> StepStart:
    """Record the step about to start (a re-attach finds it, and where its lines go),
    unless a cancel came first. Fenced when the claim was lost."""
    result = await session.execute(
        update(RUNS)
        .where(R.id == run_id, R.epoch == epoch, R.cancel_requested.is_(None))
        .values(runner_run_id=runner_run_id, step_seq_offset=seq_offset)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return StepStart.STARTED
    current = await session.scalar(select(R.epoch).where(R.id == run_id))
    if current != epoch:
        raise Fenced(f"run {run_id} was claimed again since epoch {epoch}")
    return StepStart.CANCELED


async def finish_plan(
    session: AsyncSession,
    run: Run,
    epoch: int,
    *,
    has_plan: bool,
    drift_detail: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    """The plan phase succeeded: the run ends (a plan run, or nothing to change), or waits
    for approval, or goes on to its apply phase (its approval policy allows it and the plan
    is not stale). Records when the plan ended and the state version it was made from."""
    values["planned_at"] = utcnow()
    values["plan_state_version"] = await approval.newest_state_version(session, run.deployment_id)
    if run.operation in (Operation.PLAN, Operation.DRIFT) or not values["has_changes"]:
        note = "plan has changes" if values["has_changes"] else "no changes"
        if run.operation == Operation.DRIFT:
            note = "drift found" if values["has_changes"] else "no drift"
        ended = await run_transitions.end(
            session, run.id, RunStatus.SUCCEEDED, exit_code=0, in_epoch=epoch, note=note,
            **values,
        )  # fmt: skip
        if ended and run.operation == Operation.DRIFT:
            verdict = DriftStatus.DRIFTED if values["has_changes"] else DriftStatus.IN_SYNC
            await drift.record(session, run, verdict, drift_detail or drift.detail_of(None))
        return
    if not has_plan:
        await run_transitions.end(
            session, run.id, RunStatus.FAILED, "the plan file was not returned", in_epoch=epoch,
            **values,
        )  # fmt: skip
        return
    deployment = await session.get_one(Deployment, run.deployment_id)
    if deployment.require_other_approver:
        # Four eyes: another token approves, whatever the run asked for.
        auto, why = False, "the deployment requires another approver"
    else:
        auto, why = approval.policy_holds(run.approve_policy, values.get("changes"))
    if auto:
        # Just made, from the newest state: only the configuration may have moved on.
        newer = await approval.newer_configuration(session, run)
        if newer:
            auto, why = False, f"{newer}: {approval.replan_hint(run, deployment)}"
    to = RunStatus.APPLYING if auto else RunStatus.AWAITING_APPROVAL
    moved = await run_transitions.move(
        session, run.id, to, among=[RunStatus.RUNNING], in_epoch=epoch, claimed_by=None,
        runner_run_id=None, **values,
    )  # fmt: skip
    if moved:
        if auto:
            note = f"auto-approved ({run.approve_policy})"
        else:
            note = f"awaiting approval (not auto-applied: {why})" if why else "awaiting approval"
        await add_event(session, run.id, "planned", note)
        if not auto:
            await outbox.emit_for_run(session, NotifyEvent.AWAITING_APPROVAL, run.id)


async def cancel_mode(session: AsyncSession, run_id: int) -> str | None:
    mode = await session.scalar(select(R.cancel_requested).where(R.id == run_id))
    return str(mode) if mode else None


async def pending_cancels(session: AsyncSession, run_ids: list[int]) -> list[tuple[int, str]]:
    rows = await session.execute(
        select(R.id, R.cancel_requested).where(R.id.in_(run_ids), R.cancel_requested.is_not(None))
    )
    return [(row.id, str(row.cancel_requested)) for row in rows]


async def heartbeat(session: AsyncSession, backend_id: str, run_ids: list[int]) -> None:
    await session.execute(
        update(RUNS)
        .where(R.id.in_(run_ids), R.claimed_by == backend_id)
        .values(heartbeat_at=db_now(session))
    )


@dataclass(frozen=True)
class Orphan:
    run_id: int
    claimed_by: str
    heartbeat_at: datetime | None
    runner: str
    epoch: int


async def orphans(session: AsyncSession, backend_id: str, stale_after: float) -> list[Orphan]:
    """Executing runs this backend claimed (it restarted) or whose executor's heartbeat
    is over `stale_after` seconds old on the database's clock (another backend died or
    hangs)."""
    rows = await session.execute(
        select(R.id, R.claimed_by, R.heartbeat_at, R.runner_id, R.epoch).where(
            R.status.in_(EXECUTING),
            R.claimed_by.is_not(None),
            or_(
                R.claimed_by == backend_id,
                R.heartbeat_at < db_now(session, -stale_after),
                R.heartbeat_at.is_(None),
            ),
        )
    )
    return [Orphan(r.id, r.claimed_by, r.heartbeat_at, r.runner_id or "", r.epoch) for r in rows]


async def adopt(session: AsyncSession, orphan: Orphan, backend_id: str) -> int | None:
    """Take the run over, if nobody did since it was read; the new epoch, or None."""
    epoch = orphan.epoch + 1
    result = await session.execute(
        update(RUNS)
        .where(R.id == orphan.run_id, R.epoch == orphan.epoch, R.claimed_by == orphan.claimed_by)
        .values(claimed_by=backend_id, heartbeat_at=db_now(session), epoch=epoch)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    await add_event(session, orphan.run_id, "adopted", f"re-attached by {backend_id}")
    return epoch
