"""The queue: the runs waiting for a runner, and claiming one of them for this backend.

A claim is one transaction that re-checks everything the dispatch pass read (the run is
still unclaimed and in the same status; for a queued run, that no other run holds its
deployment and no older run of it is queued) under a row lock (`FOR UPDATE SKIP LOCKED`
and the deployment's row on PostgreSQL; SQLite's transactions are exclusive), so any
number of backends on one database dispatch each run once and each deployment's runs in
the order they were queued. Every claim bumps the run's epoch, which every later write of
the execution checks (see `backend.store.executions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from backend.models import ConfigVersion, Deployment, Run, RunEvent, RunStatus, utcnow
from backend.runner_ids import Phase
from backend.store import run_transitions

RUNS = cast(Table, Run.__table__)
R = RUNS.c
DEPLOYMENTS = cast(Table, Deployment.__table__)
D = DEPLOYMENTS.c
C = cast(Table, ConfigVersion.__table__).c
RUN_EVENTS = cast(Table, RunEvent.__table__)

# Statuses in which a run holds its deployment: no other run of it may start.
HOLDING = (RunStatus.RUNNING.value, RunStatus.AWAITING_APPROVAL.value, RunStatus.APPLYING.value)
WAITING = (RunStatus.QUEUED.value, RunStatus.APPLYING.value)  # with no claim: to dispatch
_OLDER = aliased(Run)


@dataclass(frozen=True)
class Candidate:
    """A run waiting for a runner, with what placing it needs."""

    id: int
    priority: int
    status: str
    operation: str
    config_version_id: int
    tool_version: str | None
    wait_reason: str
    deployment_id: int
    required_labels: dict[str, str]
    tool: str
    version_constraint: str | None
    head: int | None  # the oldest queued run of its deployment (None for an apply phase)

    @property
    def phase(self) -> Phase:
        return Phase.PLAN if self.status == RunStatus.QUEUED.value else Phase.APPLY


def _in_queue_order(status: str, *, new_only: bool) -> Select[Any]:
    """The waiting runs in `status` in queue order, with what placing each needs: read in
    the order of the index ix_runs_queue (ix_runs_new with `new_only`), never sorted."""
    head = (
        select(func.min(_OLDER.id))
        .where(_OLDER.deployment_id == R.deployment_id, _OLDER.status == RunStatus.QUEUED.value)
        .scalar_subquery()
        .label("head")
    )
    query = (
        select(
            R.id,
            R.priority,
            R.status,
            R.operation,
            R.config_version_id,
            R.tool_version,
            R.wait_reason,
            R.deployment_id,
            D.required_labels,
            D.tool,
            D.version_constraint,
            head,
        )
        .join(DEPLOYMENTS, D.id == R.deployment_id)
        .where(R.status == status, R.claimed_by.is_(None), D.deleted_at.is_(None))
        .order_by(R.priority.desc(), R.id)
    )
    return query.where(R.wait_reason == "") if new_only else query


def waiting(
    status: str, *, limit: int, new_only: bool = False, after: tuple[int, int] | None = None
) -> list[Select[Any]]:
    """The queries `candidates` reads the runs in `status` with, in turn. Those after a
    run (`after`) are two seeks: behind it at its priority, then at lower priorities."""
    query = _in_queue_order(status, new_only=new_only).limit(limit)
    if after is None:
        return [query]
    priority, run_id = after
    return [
        query.where(R.priority == priority, R.id > run_id),
        query.where(R.priority < priority),
    ]


async def candidates(
    session: AsyncSession,
    *,
    limit: int,
    new_only: bool = False,
    after: tuple[int, int] | None = None,
) -> list[Candidate]:
    """Up to `limit` waiting runs in queue order: highest priority first, then oldest (by
    id, the order they were queued in). With `new_only`, only those without a wait reason
    yet; with `after` (a run's (priority, id)), only those behind that run."""
    rows: list[Any] = []
    for status in WAITING:
        found: list[Any] = []
        for query in waiting(status, limit=limit, new_only=new_only, after=after):
            found += (await session.execute(query.limit(limit - len(found)))).all()
            if len(found) >= limit:
                break
        rows += found
    rows = sorted(rows, key=lambda row: (-row.priority, row.id))[:limit]
    return [
        Candidate(
            id=row.id,
            priority=row.priority,
            status=row.status,
            operation=row.operation,
            config_version_id=row.config_version_id,
            tool_version=row.tool_version,
            wait_reason=row.wait_reason,
            deployment_id=row.deployment_id,
            required_labels=row.required_labels or {},
            tool=row.tool,
            version_constraint=row.version_constraint,
            head=row.head if row.status == RunStatus.QUEUED.value else None,
        )
        for row in rows
    ]


async def holders(session: AsyncSession, deployments: set[int]) -> dict[int, tuple[int, str]]:
    """The run holding each of `deployments` that is held: deployment id -> (run id, its
    status)."""
    rows = await session.execute(
        select(R.deployment_id, R.id, R.status).where(
            R.deployment_id.in_(deployments), R.status.in_(HOLDING)
        )
    )
    return {row.deployment_id: (row.id, row.status) for row in rows}


async def config_archives(session: AsyncSession, ids: set[int]) -> list[tuple[int, bytes]]:
    rows = await session.execute(select(C.id, C.archive).where(C.id.in_(ids)))
    return [(row.id, row.archive) for row in rows]


async def record_waits(session: AsyncSession, reasons: dict[int, str]) -> None:
    """Why each run still waits (for runs nobody claimed meanwhile), in one statement."""
    if not reasons:
        return
    await session.execute(
        update(RUNS)
        .where(R.id == bindparam("run_id"), R.claimed_by.is_(None))
        .values(wait_reason=bindparam("reason"))
        .execution_options(synchronize_session=False),
        [{"run_id": i, "reason": r} for i, r in reasons.items()],
    )


@dataclass(frozen=True)
class Claim:
    """A run claimed by this backend for one phase on one runner; what undoing it needs."""

    run_id: int
    runner: str
    epoch: int
    phase: Phase
    created_at: datetime
    event_id: int
    previous: dict[str, Any]  # the columns the claim changed, as they were


async def claim(
    session: AsyncSession,
    run_id: int,
    status: str,
    runner: str,
    version: str,
    backend_id: str,
    *,
    row_locks: bool,
) -> Claim | None:
    """Claim the run (read in `status`) for this backend on `runner`; None when it was
    taken or changed since, or is not first in its deployment's queue. `row_locks`: lock
    the rows (PostgreSQL; SQLite's transaction is exclusive anyway)."""
    query = select(
        R.claimed_by,
        R.status,
        R.deployment_id,
        R.dispatch_count,
        R.epoch,
        R.last_seq,
        R.started_at,
        R.created_at,
        R.tool_version,
        R.runner_id,
    ).where(R.id == run_id)
    if row_locks:
        query = query.with_for_update(skip_locked=True)
    run = (await session.execute(query)).first()
    if run is None or run.claimed_by is not None or run.status != status:
        return None
    to = RunStatus(status)
    if status == RunStatus.QUEUED.value:
        if row_locks:  # serialise the claims of one deployment
            await session.execute(select(D.id).where(D.id == run.deployment_id).with_for_update())
        ahead = await session.scalar(
            select(R.id)
            .where(
                R.deployment_id == run.deployment_id,
                R.id != run_id,
                (R.status.in_(HOLDING)) | ((R.status == RunStatus.QUEUED.value) & (R.id < run_id)),
            )
            .limit(1)
        )
        if ahead is not None:
            return None
        to = RunStatus.RUNNING
    now = utcnow()
    epoch = run.epoch + 1
    values = {
        "claimed_by": backend_id,
        "runner_id": runner,
        "tool_version": version,
        "dispatch_count": run.dispatch_count + 1,
        "epoch": epoch,
        "heartbeat_at": now,
        "started_at": run.started_at or now,
        "wait_reason": "",
        "runner_run_id": None,
        "step_seq_offset": run.last_seq,
    }
    if to == RunStatus.RUNNING:
        moved = await run_transitions.move(session, run_id, to, among=[RunStatus.QUEUED], **values)
    else:
        result = await session.execute(update(RUNS).where(R.id == run_id).values(**values))
        moved = result.rowcount == 1  # type: ignore[attr-defined]
    if not moved:
        return None
    phase = Phase.PLAN if to == RunStatus.RUNNING else Phase.APPLY
    event_id = await session.scalar(
        insert(RUN_EVENTS)
        .values(
            run_id=run_id,
            kind="dispatched",
            message=f"{phase} phase on runner {runner} by backend {backend_id}",
            at=now,
        )
        .returning(RUN_EVENTS.c.id)
    )
    assert event_id is not None
    previous = {
        "status": status,
        "started_at": run.started_at,
        "tool_version": run.tool_version,
        "runner_id": run.runner_id,
    }
    return Claim(run_id, runner, epoch, phase, run.created_at, event_id, previous)


async def unclaim(session: AsyncSession, claim: Claim, reason: str) -> bool:
    """Undo a claim whose runner refused the run before it started (it was full): the run
    is back where it was, first in its deployment's queue, with no trace of the dispatch in
    its history but `reason` as why it waits. Its epoch stays bumped (the undone execution
    may write nothing more). False when the claim was lost meanwhile."""
    values: dict[str, Any] = {
        "claimed_by": None,
        "runner_run_id": None,
        "started_at": claim.previous["started_at"],
        "tool_version": claim.previous["tool_version"],
        "runner_id": claim.previous["runner_id"],
        "wait_reason": reason,
    }
    if claim.previous["status"] == RunStatus.QUEUED.value:
        moved = await run_transitions.move(
            session,
            claim.run_id,
            RunStatus.QUEUED,
            among=[RunStatus.RUNNING],
            in_epoch=claim.epoch,
            **values,
        )
    else:
        result = await session.execute(
            update(RUNS).where(R.id == claim.run_id, R.epoch == claim.epoch).values(**values)
        )
        moved = result.rowcount == 1  # type: ignore[attr-defined]
    if moved:
        await session.execute(delete(RUN_EVENTS).where(RUN_EVENTS.c.id == claim.event_id))
    return moved
