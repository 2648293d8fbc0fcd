"""Drift: the fleet's drift status (every deployment in the token's scope, drifted first),
one deployment's status with its recent checks, and starting a check now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from sqlalchemy import select

from backend.access import Role
from backend.api.deps import DeploymentDep, SessionDep, TokenDep, needs, scope_of
from backend.api.routes.runs import engine_of, one_run_out
from backend.api.routing import CheckedRoute
from backend.errors import Conflict
from backend.models import ACTIVE_STATUSES, Deployment, Operation, Run
from backend.schemas.drift import DriftCheckOut, DriftOut
from backend.schemas.runs import RunOut
from backend.store import deployments
from backend.store import drift as drift_store
from backend.store import runs as run_store

router = APIRouter(tags=["drift"], route_class=CheckedRoute)


def drift_out(row: Deployment, detail: dict[str, object] | None) -> DriftOut:
    return DriftOut(
        deployment=row.name,
        status=row.drift_status,
        checked_at=row.drift_checked_at,
        run_id=row.drift_run_id,
        detail=detail or {},
    )


@router.get("/drift", **needs(Role.VIEWER))
async def fleet_drift(session: SessionDep, token: TokenDep) -> list[DriftOut]:
    """Every deployment's drift status: drifted first, then failed checks, never checked,
    in sync; by name within each."""
    scope = scope_of(token)
    rows = [
        d for d in await deployments.list_deployments(session) if scope.covers(d.name, d.labels)
    ]
    details = await drift_store.latest_details(
        session, [d.drift_run_id for d in rows if d.drift_run_id is not None]
    )
    rows.sort(key=lambda d: drift_store.fleet_order(d.drift_status, d.name))
    return [drift_out(d, details.get(d.drift_run_id or 0)) for d in rows]


@router.get("/deployments/{name}/drift", **needs(Role.VIEWER))
async def deployment_drift(deployment: DeploymentDep, session: SessionDep) -> DriftOut:
    checks = await drift_store.history(session, deployment.id)
    current = next((c.detail for c in checks if c.run_id == deployment.drift_run_id), None)
    out = drift_out(deployment, current)
    out.history = [DriftCheckOut.model_validate(c) for c in checks]
    return out


@router.post(
    "/deployments/{name}/drift", status_code=status.HTTP_201_CREATED, **needs(Role.PLANNER)
)
async def check_drift(
    name: Annotated[str, Path(description="Deployment name.")],
    session: SessionDep,
    request: Request,
    token: TokenDep,
) -> RunOut:
    """Queue a drift check (a `plan -refresh-only` run) now, unless one is waiting or
    running already (409 names it)."""
    # Its row locked: a delete waits (then refuses: an active run), and two requests at
    # once queue one check.
    deployment = await deployments.get_deployment(
        session, name, for_update=True, scope=scope_of(token)
    )
    pending = await session.scalar(
        select(Run.id).where(
            Run.deployment_id == deployment.id,
            Run.operation == Operation.DRIFT.value,
            Run.status.in_([s.value for s in ACTIVE_STATUSES]),
        )
    )
    if pending is not None:
        raise Conflict(
            f"a drift check of {deployment.name!r} is already queued or running: run {pending}"
        )
    run = await run_store.create_run(
        session, deployment, Operation.DRIFT.value, actor=token.name, actor_id=token.id
    )
    out = await one_run_out(session, run.id)
    await session.commit()
    engine_of(request).wake()
    return out
