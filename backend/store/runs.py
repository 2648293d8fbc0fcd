"""Runs: the minimal persistence the rest of the backend builds on (create, look up, history).
The queue, dispatch and lifecycle live elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Conflict, Invalid, NotFound
from backend.models import Deployment, NotifyEvent, Operation, Run, RunEvent, RunStatus
from backend.store import outbox
from backend.store.configs import get_config_version
from backend.store.deployments import check_priority

SYSTEM = "system"  # the actor of what the platform does by itself


async def create_run(
    session: AsyncSession,
    deployment: Deployment,
    operation: str,
    *,
    priority: int | None = None,
    approve_policy: str | None = None,
    config_version: int | None = None,
    actor: str = SYSTEM,
    comment: str = "",
    actor_id: int | None = None,
    schedule_id: int | None = None,
) -> Run:
    """Queue a run on the deployment's latest (or the given) config version; its approval
    policy is the deployment's unless given."""
    if operation not in {o.value for o in Operation}:
        raise Invalid(
            f"operation {operation!r} is invalid: use 'plan', 'apply', 'destroy' or 'drift'"
        )
    if deployment.require_other_approver and approve_policy not in (None, "never"):
        raise Conflict(
            f"deployment {deployment.name!r} requires another approver than the run's "
            f"creator: a run cannot be auto-approved ({approve_policy})"
        )
    config = await get_config_version(session, deployment, config_version)
    run = Run(
        deployment_id=deployment.id,
        config_version_id=config.id,
        operation=operation,
        status=RunStatus.QUEUED.value,
        priority=check_priority(deployment.default_priority if priority is None else priority),
        approve_policy=approve_policy or deployment.auto_approve,
        created_by=actor,
        created_by_token=actor_id,
        schedule_id=schedule_id,
    )
    session.add(run)
    await session.flush()
    await add_event(
        session,
        run.id,
        "queued",
        f"{operation} queued (config v{config.version})",
        actor=actor,
        comment=comment,
    )
    await outbox.emit_for_run(session, NotifyEvent.RUN_CREATED, run.id)
    return run


async def get_run(session: AsyncSession, run_id: int, *, for_update: bool = False) -> Run:
    query = select(Run).where(Run.id == run_id)
    if for_update:
        query = query.with_for_update()
    run = await session.scalar(query)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


async def add_event(
    session: AsyncSession,
    run_id: int,
    kind: str,
    message: str = "",
    *,
    actor: str = SYSTEM,
    comment: str = "",
) -> RunEvent:
    """Append an entry to the run's history: what, who (an API token's name, or "system"),
    and the person's comment."""
    event = RunEvent(run_id=run_id, kind=kind, message=message, actor=actor, comment=comment)
    session.add(event)
    await session.flush()
    return event


async def list_events(session: AsyncSession, run_id: int) -> Sequence[RunEvent]:
    rows = await session.scalars(
        select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
    )
    return rows.all()
