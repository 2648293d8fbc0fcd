"""Every change of a run's status, checked against one table of allowed transitions.

    queued ─claim─▶ running ─plan ends─▶ awaiting_approval ─approve─▶ applying
       ▲              │ │                                              ▲
       └──unclaim─────┘ └───────────── auto-approved ──────────────────┘
    running, applying ─end─▶ succeeded | failed | canceled | timed_out
    queued, awaiting_approval, applying (between phases) ─cancel─▶ canceled
    awaiting_approval ─discard─▶ discarded

"unclaim": the runner refused the run's first step (full): the claim is undone and the
run keeps its place. A change is one conditional UPDATE (`WHERE status IN (...)`, and the
executing backend's claim epoch where one executes it), so two backends, or a backend and
an API request, can never both move a run: the second finds the row changed and gets
False.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend import metrics
from backend.errors import Conflict
from backend.models import (
    CancelMode,
    Deployment,
    DriftStatus,
    Operation,
    Run,
    RunStatus,
    StateLock,
    utcnow,
)
from backend.store import approval, drift, outbox
from backend.store import state as state_store
from backend.store.runs import SYSTEM, add_event, get_run

S = RunStatus
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELED}),
    S.RUNNING: frozenset(
        {S.QUEUED, S.AWAITING_APPROVAL, S.APPLYING, S.SUCCEEDED, S.FAILED, S.CANCELED, S.TIMED_OUT}
    ),
    S.AWAITING_APPROVAL: frozenset({S.APPLYING, S.CANCELED, S.DISCARDED}),
    S.APPLYING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELED, S.TIMED_OUT}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.DISCARDED: frozenset(),
}
ENDINGS = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELED, S.TIMED_OUT, S.DISCARDED})

RUNS = cast(Table, Run.__table__)
R = RUNS.c


def sources(to: RunStatus, among: Iterable[RunStatus] | None = None) -> list[str]:
    """The statuses a run may reach `to` from (those of `among`, when given)."""
    allowed = [s for s, targets in TRANSITIONS.items() if to in targets]
    if among is not None:
        wanted = set(among)
        bad = wanted - set(allowed)
        if bad:
            raise ValueError(f"no transition {sorted(bad)} -> {to}")
        allowed = [s for s in allowed if s in wanted]
    return [s.value for s in allowed]


async def move(
    session: AsyncSession,
    run_id: int,
    to: RunStatus,
    *,
    among: Iterable[RunStatus] | None = None,
    in_epoch: int | None = None,
    **values: Any,
) -> bool:
    """Set the run's status to `to` (and `values`) if it is in a status that may move there
    (one of `among`) and, with `in_epoch`, still claimed in that epoch; whether it moved."""
    query = update(RUNS).where(R.id == run_id, R.status.in_(sources(to, among)))
    if in_epoch is not None:
        query = query.where(R.epoch == in_epoch)
    result = await session.execute(query.values(status=to.value, **values))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def end(
    session: AsyncSession,
    run_id: int,
    status: RunStatus,
    message: str = "",
    *,
    exit_code: int | None = None,
    in_epoch: int | None = None,
    note: str = "",
    actor: str = SYSTEM,
    comment: str = "",
    **values: Any,
) -> bool:
    """End the run (from any status that may end so; with `in_epoch`, only while claimed in
    it): times, message, claim given up, a state lock still held by the run released and
    recorded, the history entry. Whether it ended (False: it had ended, or was taken)."""
    assert status in ENDINGS, status
    moved = await move(
        session,
        run_id,
        status,
        in_epoch=in_epoch,
        ended_at=utcnow(),
        error_msg=message,
        exit_code=exit_code,
        claimed_by=None,
        **values,
    )
    if not moved:
        return False
    held = await session.scalar(select(StateLock.deployment_id).where(StateLock.run_id == run_id))
    if held is not None:
        await state_store.release_lock(
            session, held, f"run {run_id} ended ({status.value}) holding it", run_id
        )
    await add_event(session, run_id, status.value, message or note, actor=actor, comment=comment)
    if status in outbox.ENDING_EVENTS:
        await outbox.emit_for_run(session, outbox.ENDING_EVENTS[status], run_id)
    if status in (S.FAILED, S.TIMED_OUT):
        run = await get_run(session, run_id)
        if run.operation == Operation.DRIFT:
            await drift.record(
                session, run, DriftStatus.CHECK_FAILED, {"reason": message or status.value}
            )
    metrics.RUNS_FINISHED.labels(status.value).inc()
    return True


async def approve(
    session: AsyncSession,
    run_id: int,
    *,
    actor: str,
    comment: str = "",
    plan_ttl: float,
    actor_id: int | None = None,
) -> None:
    """A plan awaiting approval goes on to its apply phase (dispatched like a new run),
    unless it is stale (the state or configuration moved on, or it is older than
    `plan_ttl` seconds) or the deployment wants another approver than the run's creator."""
    run = await get_run(session, run_id, for_update=True)
    if run.status != RunStatus.AWAITING_APPROVAL:
        raise Conflict(
            f"run {run_id} is {run.status}; only a run awaiting approval can be approved"
        )
    deployment = await session.get_one(Deployment, run.deployment_id)
    same = (
        run.created_by_token == actor_id
        if run.created_by_token is not None
        else run.created_by == actor
    )
    if deployment.require_other_approver and same:
        raise Conflict(
            f"run {run_id} was created by {actor!r}; deployment {deployment.name!r} requires "
            "another approver (require_other_approver)"
        )
    stale = await approval.stale_reason(session, run, plan_ttl)
    if stale:
        raise Conflict(f"run {run_id} cannot be approved: {stale}")
    moved = await move(
        session, run_id, RunStatus.APPLYING, among=[RunStatus.AWAITING_APPROVAL], claimed_by=None
    )
    if not moved:  # pragma: no cover - the row is locked above (on PostgreSQL)
        raise Conflict(f"run {run_id} is no longer awaiting approval")
    await add_event(session, run_id, "approved", "", actor=actor, comment=comment)


async def discard(session: AsyncSession, run_id: int, *, actor: str, comment: str = "") -> None:
    """A plan awaiting approval ends without being applied; the deployment's queue moves on."""
    ended = await end(
        session, run_id, RunStatus.DISCARDED, note="plan discarded", actor=actor, comment=comment
    )
    if not ended:
        run = await get_run(session, run_id)
        raise Conflict(
            f"run {run_id} is {run.status}; only a run awaiting approval can be discarded"
        )


async def cancel(
    session: AsyncSession, run_id: int, mode: CancelMode, *, actor: str = SYSTEM, comment: str = ""
) -> bool:
    """Cancel the run: at once when nothing executes it (queued, awaiting approval, between
    phases); else the request is recorded for the backend executing it, and True says the
    runner must be told."""
    run = await get_run(session, run_id, for_update=True)
    if run.status in ENDINGS:
        raise Conflict(f"run {run_id} has already ended ({run.status})")
    if run.claimed_by is None:
        await end(
            session, run_id, RunStatus.CANCELED, f"canceled while {run.status}", actor=actor,
            comment=comment,
        )  # fmt: skip
        return False
    run.cancel_requested = mode.value
    await add_event(session, run_id, "cancel_requested", mode.value, actor=actor, comment=comment)
    return True
