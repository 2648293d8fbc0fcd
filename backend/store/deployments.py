"""Deployments: create, look up, list, delete, restore and purge.

Deleting is a soft delete: the row gets ``deleted_at`` and, with everything it owns (state
versions, runs, logs, variables, configurations), is hidden from every route but the
deleted list, restore and purge, until the retention period ends and ``purge_expired``
removes it for good. Its name stays taken meanwhile. A deployment is deleted only when no
run of it is active and its state is unlocked, and, unless forced, when its latest state
manages no resource (deleting would forget live infrastructure).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.access import Scope
from backend.crypto import Cipher
from backend.errors import Conflict, Invalid, NotFound
from backend.models import (
    ACTIVE_STATUSES,
    ApprovePolicy,
    Deployment,
    Run,
    StateLock,
    StateVersion,
    Tool,
    utcnow,
)
from backend.store.validation import check_labels, check_name
from backend.tool_versions import parse_constraint

# A state this large is parsed in a worker thread, not on the event loop.
PARSE_OFF_LOOP_BYTES = 256 * 1024

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
    labels: dict[str, str] | None = None,
    default_priority: int = 0,
    version_constraint: str | None = None,
    auto_approve: str = ApprovePolicy.NEVER.value,
    require_other_approver: bool = False,
) -> Deployment:
    check_name(name, "deployment")
    if tool not in {t.value for t in Tool}:
        raise Invalid(f"tool {tool!r} is not supported: use 'terraform' or 'tofu'")
    row = Deployment(
        name=name,
        tool=tool,
        required_labels=check_labels(required_labels, "required_labels"),
        labels=check_labels(labels, "labels"),
        default_priority=check_priority(default_priority),
        version_constraint=check_version_constraint(version_constraint),
        auto_approve=check_policy(auto_approve),
        require_other_approver=require_other_approver,
    )
    check_four_eyes(row.auto_approve, row.require_other_approver)
    existing = await session.scalar(select(Deployment).where(Deployment.name == name))
    if existing is not None:
        if existing.deleted_at is not None:
            raise Conflict(deleted_exists(existing))
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


def check_policy(policy: str) -> str:
    if policy not in {p.value for p in ApprovePolicy}:
        raise Invalid(f"auto_approve {policy!r} is invalid: use 'never', 'always' or 'no-destroy'")
    return policy


async def update_deployment(
    session: AsyncSession,
    deployment: Deployment,
    *,
    labels: dict[str, str] | None = None,
    default_priority: int | None = None,
    auto_approve: str | None = None,
    require_other_approver: bool | None = None,
) -> Deployment:
    """Change the settings given (None: unchanged)."""
    if labels is not None:
        deployment.labels = check_labels(labels, "labels")
    if default_priority is not None:
        deployment.default_priority = check_priority(default_priority)
    if auto_approve is not None:
        deployment.auto_approve = check_policy(auto_approve)
    if require_other_approver is not None:
        deployment.require_other_approver = require_other_approver
    check_four_eyes(deployment.auto_approve, deployment.require_other_approver)
    await session.flush()
    return deployment


def check_four_eyes(auto_approve: str, require_other_approver: bool) -> None:
    if require_other_approver and auto_approve != ApprovePolicy.NEVER.value:
        raise Invalid(
            f"require_other_approver needs auto_approve 'never' (not {auto_approve!r}): an "
            "auto-approved run has no approver at all"
        )


def deleted_exists(row: Deployment) -> str:
    """Why a deleted deployment's name is taken, and the two ways out."""
    name = row.name
    when = row.deleted_at.strftime("%Y-%m-%d %H:%M UTC") if row.deleted_at else "?"
    return (
        f"a deleted deployment named {name!r} exists (deleted {when}): restore it "
        f"(POST /deployments/{name}/restore, iac deployments restore {name}) or purge it for "
        f"good (DELETE /deployments/{name}?purge=true, iac deployments delete {name} --purge)"
    )


def _hidden(row: Deployment | None, scope: Scope | None) -> bool:
    """No such deployment, or one outside `scope`: the caller cannot tell the two apart."""
    return row is None or (scope is not None and not scope.covers(row.name, row.labels))


async def check_in_scope(session: AsyncSession, name: str, scope: Scope) -> None:
    """NotFound when no deployment (live or deleted) named `name` is within `scope`."""
    row = await session.scalar(select(Deployment).where(Deployment.name == name))
    if row is not None and _hidden(row, scope):
        raise NotFound(f"deployment {name!r} does not exist")


async def get_deployment(
    session: AsyncSession,
    name: str,
    *,
    for_update: bool = False,
    for_share: bool = False,
    scope: Scope | None = None,
) -> Deployment:
    """The live (not deleted) deployment ``name``; NotFound otherwise. ``for_share`` keeps
    it from being deleted until the transaction ends (PostgreSQL; SQLite transactions are
    serialised anyway), ``for_update`` also from any other change."""
    query = select(Deployment).where(Deployment.name == name)
    if for_update:
        query = query.with_for_update()
    elif for_share:
        query = query.with_for_update(read=True)
    row = await session.scalar(query)
    if row is None or _hidden(row, scope):
        raise NotFound(f"deployment {name!r} does not exist")
    if row.deleted_at is not None:
        raise NotFound(
            f"deployment {name!r} does not exist: it was deleted; restore it with "
            f"POST /deployments/{name}/restore (iac deployments restore {name})"
        )
    return row


async def get_deleted_deployment(
    session: AsyncSession, name: str, *, for_update: bool = False
) -> Deployment:
    """The deleted deployment ``name``: NotFound when there is none, Conflict when the
    deployment exists and is not deleted."""
    query = select(Deployment).where(Deployment.name == name)
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"deployment {name!r} does not exist")
    if row.deleted_at is None:
        raise Conflict(f"deployment {name!r} is not deleted")
    return row


async def list_deployments(session: AsyncSession, *, deleted: bool = False) -> Sequence[Deployment]:
    """The live deployments, or with ``deleted`` the deleted ones (not yet purged)."""
    kept = Deployment.deleted_at.is_not(None) if deleted else Deployment.deleted_at.is_(None)
    return (await session.scalars(select(Deployment).where(kept).order_by(Deployment.name))).all()


async def active_run_ids(session: AsyncSession, deployment_id: int) -> list[int]:
    rows = await session.scalars(
        select(Run.id)
        .where(Run.deployment_id == deployment_id, Run.status.in_(ACTIVE_STATUSES))
        .order_by(Run.id)
    )
    return list(rows)


def count_resources(state: bytes) -> int:
    """Resource instances a Terraform state manages (data sources are not managed: they
    are read, not created); 0 for a state that is not a JSON object."""
    try:
        doc = json.loads(state)
    except (ValueError, RecursionError):
        return 0
    resources = doc.get("resources") if isinstance(doc, dict) else None
    count = 0
    for resource in resources if isinstance(resources, list) else []:
        if isinstance(resource, dict) and resource.get("mode", "managed") == "managed":
            instances = resource.get("instances")
            count += len(instances) if isinstance(instances, list) else 0
    return count


async def managed_resources(session: AsyncSession, cipher: Cipher, deployment_id: int) -> int:
    """Resource instances in the deployment's latest state version (0: none, or deleted)."""
    data = await session.scalar(
        select(StateVersion.data)
        .where(StateVersion.deployment_id == deployment_id)
        .order_by(StateVersion.id.desc())
        .limit(1)
    )
    if not data:
        return 0
    state = cipher.unseal(data)
    if len(state) > PARSE_OFF_LOOP_BYTES:
        return await asyncio.to_thread(count_resources, state)
    return count_resources(state)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def delete_deployment(
    session: AsyncSession, cipher: Cipher, name: str, *, force: bool = False
) -> Deployment:
    """Mark the deployment deleted (kept until purged: see the module). Refused while a
    run is active or the state is locked, and, unless ``force``, while its latest state
    manages resources."""
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
    if not force:
        count = await managed_resources(session, cipher, deployment.id)
        if count:
            raise Conflict(
                f"deployment {name!r} still manages {plural(count, 'resource')} in its latest "
                f"state; destroy them first (iac destroy {name}) or delete with force=true"
            )
    deployment.deleted_at = utcnow()
    await session.flush()
    return deployment


async def restore_deployment(session: AsyncSession, name: str) -> Deployment:
    """Bring a deleted deployment back, as it was when deleted."""
    deployment = await get_deleted_deployment(session, name, for_update=True)
    deployment.deleted_at = None
    await session.flush()
    return deployment


async def purge_deployment(session: AsyncSession, name: str) -> None:
    """Remove a deleted deployment and everything it owns for good (the second of two
    explicit steps: a live deployment is refused)."""
    try:
        deployment = await get_deleted_deployment(session, name, for_update=True)
    except Conflict:
        raise Conflict(
            f"deployment {name!r} is not deleted: delete it first, then purge it "
            "(purging takes two steps)"
        ) from None
    # The database cascades to every dependent row (foreign keys with ON DELETE CASCADE).
    await session.execute(delete(Deployment).where(Deployment.id == deployment.id))
    session.expunge(deployment)


def purge_after(deleted_at: datetime, retention_days: float) -> datetime:
    """When a deployment deleted at ``deleted_at`` is purged."""
    return deleted_at + timedelta(days=retention_days)


async def purge_expired(
    session: AsyncSession, retention_days: float, now: datetime | None = None
) -> list[str]:
    """Remove for good every deployment deleted over ``retention_days`` ago (as of
    ``now``, default the current time); the names purged."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    rows = (
        await session.execute(
            select(Deployment.id, Deployment.name).where(Deployment.deleted_at <= cutoff)
        )
    ).all()
    if rows:
        # The condition again: one restored since the select is not purged.
        await session.execute(
            delete(Deployment).where(
                Deployment.id.in_([r.id for r in rows]), Deployment.deleted_at <= cutoff
            )
        )
    return sorted(r.name for r in rows)
