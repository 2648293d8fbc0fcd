"""Drift: each deployment's verdict from its last drift check (a `plan -refresh-only` run),
the short history of checks, and the fleet view.

A check that ends records its verdict: `in_sync` (the plan found nothing), `drifted`
(resources or outputs changed outside terraform; their addresses and names, from the
redacted plan review) or `check_failed` (the reason). A deployment's status is its newest
check's: a check that ends after a newer one was recorded changes only the history.
`drift.detected` is sent when a deployment becomes drifted or what drifted changes, and
`drift.check_failed` when checks start failing: not again at every check that says the same.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Deployment, DriftCheck, DriftStatus, NotifyEvent, Run, utcnow
from backend.plans import Plan
from backend.store import outbox

HISTORY = 50  # checks kept per deployment; the runs themselves stay in its run history
# The fleet view's order: what needs someone first.
ORDER = {
    DriftStatus.DRIFTED: 0,
    DriftStatus.CHECK_FAILED: 1,
    DriftStatus.UNKNOWN: 2,
    DriftStatus.IN_SYNC: 3,
}


def detail_of(review: Plan | None) -> dict[str, Any]:
    """What drifted, as a review tells it: resource addresses with terraform's action, and
    output names. Never a value (addresses are already scrubbed of secrets)."""
    if review is None:
        return {"resources": [], "outputs": []}
    return {
        "resources": [{"address": r.address, "action": r.action} for r in review.resource_drift],
        "outputs": [o.name for o in review.output_changes],
    }


def _fingerprint(detail: dict[str, Any]) -> tuple[Any, ...]:
    resources = sorted(r.get("address", "") for r in detail.get("resources") or [])
    return (tuple(resources), tuple(sorted(detail.get("outputs") or [])))


async def record(
    session: AsyncSession, run: Run, status: DriftStatus, detail: dict[str, Any]
) -> None:
    """The check of `run` ended with `status`: its history entry, the deployment's status
    (unless a newer check is recorded already) and the events the change calls for,
    compared with the deployment's verdict as it stands (its row locked: checks ending at
    once are recorded one after the other)."""
    deployment = await session.scalar(
        select(Deployment)
        .where(Deployment.id == run.deployment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert deployment is not None
    now = utcnow()
    session.add(
        DriftCheck(
            deployment_id=run.deployment_id,
            run_id=run.id,
            status=status.value,
            checked_at=now,
            detail=detail,
        )
    )
    current = deployment.drift_run_id
    if current is not None and current > run.id:
        await _keep_recent(session, run.deployment_id)
        return  # a newer check's verdict stands
    was = DriftStatus(deployment.drift_status)
    before = {}
    if current is not None:
        before = (await latest_details(session, [current])).get(current, {})
    await session.execute(
        update(Deployment)
        .where(Deployment.id == run.deployment_id)
        .values(drift_status=status.value, drift_checked_at=now, drift_run_id=run.id)
    )
    await _keep_recent(session, run.deployment_id)
    if status == DriftStatus.DRIFTED and (
        was != DriftStatus.DRIFTED or _fingerprint(before) != _fingerprint(detail)
    ):
        await _emit(session, NotifyEvent.DRIFT_DETECTED, run, status, detail)
    elif status == DriftStatus.CHECK_FAILED and was != DriftStatus.CHECK_FAILED:
        await _emit(session, NotifyEvent.DRIFT_CHECK_FAILED, run, status, detail)


async def _emit(
    session: AsyncSession,
    kind: NotifyEvent,
    run: Run,
    status: DriftStatus,
    detail: dict[str, Any],
) -> None:
    if not await outbox.subscribers(session, kind, run.deployment_id):
        return
    deployment_id, payload = await outbox.run_payload(session, run.id)
    payload["drift"] = {"status": status.value, **detail}
    await outbox.emit(session, kind, payload, deployment_id=deployment_id, run_id=run.id)


async def _keep_recent(session: AsyncSession, deployment_id: int) -> None:
    await session.flush()
    oldest_kept = await session.scalar(
        select(DriftCheck.id)
        .where(DriftCheck.deployment_id == deployment_id)
        .order_by(DriftCheck.id.desc())
        .offset(HISTORY - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        await session.execute(
            delete(DriftCheck).where(
                DriftCheck.deployment_id == deployment_id, DriftCheck.id < oldest_kept
            )
        )


async def history(
    session: AsyncSession, deployment_id: int, limit: int = HISTORY
) -> list[DriftCheck]:
    rows = await session.scalars(
        select(DriftCheck)
        .where(DriftCheck.deployment_id == deployment_id)
        .order_by(DriftCheck.id.desc())
        .limit(limit)
    )
    return list(rows)


async def latest_details(session: AsyncSession, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The detail of the checks run by `run_ids` (the deployments' current verdicts)."""
    if not run_ids:
        return {}
    rows = await session.execute(
        select(DriftCheck.run_id, DriftCheck.detail).where(DriftCheck.run_id.in_(run_ids))
    )
    return {run_id: detail for run_id, detail in rows}


def fleet_order(status: str, name: str) -> tuple[int, str]:
    return (ORDER.get(DriftStatus(status), 9), name)
