"""The notification outbox: an event is written in the transaction of the change that
causes it (a run's status, a drift verdict), with one pending delivery per destination that
wants it, so no event is lost by a crash between the change and its notification and none
is sent for a change that was rolled back. `backend.notify` delivers them.

A payload holds no secret and no log line: names, statuses, counts, the run's link (its
path; the deliverer prefixes IAC_PUBLIC_URL) and, for drift, the redacted addresses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import (
    Deployment,
    NotificationDelivery,
    NotificationDestination,
    NotificationEvent,
    NotifyEvent,
    Run,
    RunStatus,
    utcnow,
)

# The event a run's ending sends (a discarded plan is a person's own decision: none).
ENDING_EVENTS = {
    RunStatus.SUCCEEDED: NotifyEvent.RUN_SUCCEEDED,
    RunStatus.FAILED: NotifyEvent.RUN_FAILED,
    RunStatus.TIMED_OUT: NotifyEvent.RUN_FAILED,
    RunStatus.CANCELED: NotifyEvent.RUN_CANCELED,
}


async def subscribers(
    session: AsyncSession,
    kind: NotifyEvent,
    deployment_id: int | None = None,
    *,
    any_: bool = False,
) -> list[int]:
    """The enabled destinations subscribed to `kind`: global ones and the deployment's
    (`any_`: of any deployment, for a first cheap check before the event is built, which
    locks nothing)."""
    query = select(
        NotificationDestination.id,
        NotificationDestination.events,
        NotificationDestination.deployment_id,
    ).where(NotificationDestination.enabled.is_(True))
    if not any_:
        # FOR KEY SHARE on PostgreSQL: a destination being deleted meanwhile is either
        # waited for and skipped, or kept until this transaction ends, so its delivery
        # never breaks the foreign key, and with it the status change that caused it.
        query = query.with_for_update(read=True, key_share=True)
    return [
        id_
        for id_, events, owner in await session.execute(query)
        if kind.value in (events or []) and (any_ or owner is None or owner == deployment_id)
    ]


async def emit(
    session: AsyncSession,
    kind: NotifyEvent,
    payload: dict[str, Any],
    *,
    deployment_id: int | None,
    run_id: int | None = None,
) -> NotificationEvent | None:
    """Record the event with a delivery for every destination subscribed to it; nothing
    when none is (None)."""
    destinations = await subscribers(session, kind, deployment_id)
    if not destinations:
        return None
    return await record(session, kind, payload, destinations, deployment_id, run_id)


async def record(
    session: AsyncSession,
    kind: NotifyEvent,
    payload: dict[str, Any],
    destinations: list[int],
    deployment_id: int | None = None,
    run_id: int | None = None,
) -> NotificationEvent:
    """The event, with a pending delivery to each of `destinations` (a test sends to one)."""
    now = utcnow()
    event = NotificationEvent(
        kind=kind.value,
        deployment_id=deployment_id,
        run_id=run_id,
        payload={"event": kind.value, "occurred_at": now.isoformat(), **payload},
        created_at=now,
    )
    session.add(event)
    await session.flush()
    session.add_all(
        NotificationDelivery(event_id=event.id, destination_id=d, next_attempt_at=now)
        for d in destinations
    )
    await session.flush()
    return event


async def run_payload(session: AsyncSession, run_id: int) -> tuple[int, dict[str, Any]]:
    """The deployment's id and what an event about the run says of it."""
    row = (
        await session.execute(
            select(Run, Deployment.name)
            .join(Deployment, Deployment.id == Run.deployment_id)
            .where(Run.id == run_id)
            # The status changes are Core UPDATEs (run_transitions.move): a Run this session
            # loaded before would otherwise be read as it was then.
            .execution_options(populate_existing=True)
        )
    ).one()
    run, name = row
    return run.deployment_id, {
        "deployment": {"name": name},
        "run": {
            "id": run.id,
            "operation": run.operation,
            "status": run.status,
            "created_by": run.created_by,
            "schedule_id": run.schedule_id,
            "changes": run.changes,
            "path": f"/runs/{run.id}",
        },
    }


async def emit_for_run(session: AsyncSession, kind: NotifyEvent, run_id: int) -> None:
    """The event `kind` about run `run_id`, with the run as it is now in this transaction."""
    if not await subscribers(session, kind, any_=True):
        return  # the usual case without destinations: one small query
    await session.flush()
    deployment_id, payload = await run_payload(session, run_id)
    if payload["run"]["operation"] == "drift" and kind.value.startswith("run."):
        return  # a drift check says what it found through the drift events
    await emit(session, kind, payload, deployment_id=deployment_id, run_id=run_id)
