"""The audit log for administrators: its entries (filtered, paginated by id) and whether
its hash chain holds. It has no route that changes or deletes an entry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from backend.access import Role
from backend.api.deps import SessionDep, needs
from backend.api.routing import CheckedRoute
from backend.schemas.audit import AuditOut, AuditVerdict
from backend.store import audit
from backend.store.validation import MAX_ID

router = APIRouter(prefix="/audit", tags=["audit"], route_class=CheckedRoute)


@router.get("", **needs(Role.ADMIN, unscoped=True))
async def list_entries(
    session: SessionDep,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="A part of it, e.g. 'approve'.")] = None,
    target: Annotated[str | None, Query(description="A part of it, e.g. 'name=web'.")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Entries after this id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """Entries oldest first; page with `after_id` = the last id you have."""
    rows = await audit.search(
        session,
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        after_id=after_id,
        limit=limit,
    )
    return [AuditOut.model_validate(r) for r in rows]


@router.get("/verify", **needs(Role.ADMIN, unscoped=True))
async def verify(session: SessionDep) -> AuditVerdict:
    """Walk the hash chain: the first entry that does not hold (edited, or after a removed
    one), if any."""
    verdict = await audit.verify(session)
    return AuditVerdict(
        entries=verdict.entries,
        ok=verdict.ok,
        broken_at=verdict.broken_at,
        reason=verdict.reason,
        head_id=verdict.head_id,
        head=verdict.head,
    )
