"""Deployments: create, look up, list and delete (only when no run is active and no lock held)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Conflict, Invalid, NotFound
from backend.models import ACTIVE_STATUSES, Deployment, Run, StateLock, Tool
from backend.store.validation import check_labels, check_name
from backend.versions import parse_constraint

PRIORITY_RANGE = (-1000, 1000)


def check_version_constraint(constraint: str | None) -> str | None:
    if constraint is None or not constraint.strip():
        return None
    if len(constraint) > 128:
        raise Invalid("a version constraint must be at most 128 characters")
    try:
        parse_constraint(constraint)
    except Invalid as exc:
        raise Invalid(f"{exc}; use terraform's syntax, e.g. '>= 1.5, < 2.0' or '~> 1.9'") from None
    return ", ".join(p.strip() for p in constraint.split(","))


def check_priority(priority: int) -> int:
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise Invalid(f"priority {priority} is out of range: use {low} to {high}")
    return priority


async def create_deployment(
    session: AsyncSession,
    *,
    name: str,
    tool: str = Tool.TERRAFORM.value,
    required_labels: dict[str, str] | None = None,
    default_priority: int = 0,
    version_constraint: str | None = None,
) -> Deployment:
    check_name(name, "deployment")
    if tool not in {t.value for t in Tool}:
        raise Invalid(f"tool {tool!r} is not supported: use 'terraform' or 'tofu'")
    row = Deployment(
        name=name,
        tool=tool,
        required_labels=check_labels(required_labels, "required_labels"),
        default_priority=check_priority(default_priority),
        version_constraint=check_version_constraint(version_constraint),
    )
    if await session.scalar(select(exists().where(Deployment.name == name))):
        raise Conflict(f"deployment {name!r} already exists")
    try:
        # Added inside the savepoint: begin_nested() flushes pending objects first, and a
        # failed insert outside it would doom the whole transaction.
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        # Another request created it between our check and our insert.
        raise Conflict(f"deployment {name!r} already exists") from None
    return row


async def get_deployment(
    session: AsyncSession, name: str, *, for_update: bool = False
) -> Deployment:
    query = select(Deployment).where(Deployment.name == name)
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"deployment {name!r} does not exist")
    return row


async def get_deployment_by_id(session: AsyncSession, deployment_id: int) -> Deployment:
    row = await session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"deployment {deployment_id} does not exist")
    return row


async def list_deployments(session: AsyncSession) -> Sequence[Deployment]:
    return (await session.scalars(select(Deployment).order_by(Deployment.name))).all()


async def active_run_ids(session: AsyncSession, deployment_id: int) -> list[int]:
    rows = await session.scalars(
        select(Run.id)
        .where(Run.deployment_id == deployment_id, Run.status.in_(ACTIVE_STATUSES))
        .order_by(Run.id)
    )
    return list(rows)


async def delete_deployment(session: AsyncSession, name: str) -> None:
    """Delete a deployment with its configs, variables, finished runs and state history."""
    deployment = await get_deployment(session, name, for_update=True)
    active = await active_run_ids(session, deployment.id)
    if active:
        listed = ", ".join(str(i) for i in active[:10])
        raise Conflict(
            f"deployment {name!r} has active runs ({listed}); cancel them or wait until they end"
        )
    lock = await session.get(StateLock, deployment.id)
    if lock is not None:
        raise Conflict(
            f"deployment {name!r} has its state locked (lock {lock.lock_id}); release it first"
        )
    # The database cascades to every dependent row (foreign keys with ON DELETE CASCADE).
    await session.execute(delete(Deployment).where(Deployment.id == deployment.id))
    session.expunge(deployment)
