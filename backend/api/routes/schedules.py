"""Schedule endpoints: a deployment's schedules (create, list, show, change, delete, run
now), and every schedule the token may see, for the Schedules page."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from backend import cron
from backend.access import Role
from backend.api.deps import DeploymentDep, SessionDep, TokenDep, needs, role_of, scope_of
from backend.api.routing import CheckedRoute
from backend.engine import Engine
from backend.errors import Forbidden, Invalid
from backend.models import Deployment, Schedule, ScheduleKind, utcnow
from backend.schemas.schedules import ScheduleCreate, ScheduleOut, ScheduleUpdate, TriggerOut
from backend.store import deployments
from backend.store import schedules as store
from backend.store.validation import MAX_ID

router = APIRouter(
    prefix="/deployments/{name}/schedules", tags=["schedules"], route_class=CheckedRoute
)
all_router = APIRouter(prefix="/schedules", tags=["schedules"], route_class=CheckedRoute)

ScheduleId = Annotated[int, Path(ge=1, le=MAX_ID, description="Schedule id.")]
UPCOMING = 3


def schedule_out(row: Schedule, deployment: Deployment) -> ScheduleOut:
    upcoming = []
    if row.enabled:
        with contextlib.suppress(Invalid):  # a zone gone from the database: none to show
            upcoming = cron.upcoming(row.cron, row.timezone, row.next_run_at, UPCOMING)
    return ScheduleOut(
        id=row.id,
        deployment=deployment.name,
        cron=row.cron,
        description=cron.describe(row.cron),
        timezone=row.timezone,
        kind=row.kind,
        operation=store.OPERATION_OF[row.kind],
        auto_approve=row.auto_approve,
        enabled=row.enabled,
        next_run_at=row.next_run_at if row.enabled else None,
        upcoming=upcoming,
        last_run_at=row.last_run_at,
        last_run_id=row.last_run_id,
        last_skipped=row.last_skipped,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def check_apply_role(token_role: Role, kind: str, token_name: str) -> None:
    """A scheduled apply is an apply: the operator role, as POST /runs asks for one."""
    if kind == ScheduleKind.APPLY.value and not token_role.includes(Role.OPERATOR):
        raise Forbidden(
            f"an apply schedule needs the operator role; token {token_name!r} is a {token_role}"
        )


@router.post("", status_code=status.HTTP_201_CREATED, **needs(Role.OPERATOR))
async def create_schedule(
    body: ScheduleCreate, deployment: DeploymentDep, session: SessionDep, token: TokenDep
) -> ScheduleOut:
    """Queue a run of the deployment on every due time of `cron` in `timezone`."""
    row = await store.create_schedule(
        session,
        deployment,
        cron_expr=body.cron,
        timezone=body.timezone,
        kind=body.kind,
        auto_approve=body.auto_approve,
        enabled=body.enabled,
        created_by=token.name,
        created_by_token=token.id,
    )
    return schedule_out(row, deployment)


@router.get("", **needs(Role.VIEWER))
async def list_schedules(deployment: DeploymentDep, session: SessionDep) -> list[ScheduleOut]:
    rows = await store.list_schedules(session, deployment)
    return [schedule_out(s, d) for s, d in rows]


@router.get("/{schedule_id}", **needs(Role.VIEWER))
async def get_schedule(
    schedule_id: ScheduleId, deployment: DeploymentDep, session: SessionDep
) -> ScheduleOut:
    return schedule_out(await store.get_schedule(session, deployment, schedule_id), deployment)


@router.patch("/{schedule_id}", **needs(Role.OPERATOR))
async def update_schedule(
    schedule_id: ScheduleId,
    body: ScheduleUpdate,
    deployment: DeploymentDep,
    session: SessionDep,
    token: TokenDep,
) -> ScheduleOut:
    """Change what is given. A new expression or zone, or enabling, sets the next due time
    from now. The token that changes a schedule owns it from then on: its runs are that
    token's, and are queued only while that token may start them."""
    row = await store.get_schedule(session, deployment, schedule_id, for_update=True)
    row = await store.update_schedule(
        session,
        deployment,
        row,
        cron_expr=body.cron,
        timezone=body.timezone,
        kind=body.kind,
        auto_approve=body.auto_approve,
        enabled=body.enabled,
        changed_by=(token.name, token.id),
    )
    return schedule_out(row, deployment)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, **needs(Role.OPERATOR))
async def delete_schedule(
    schedule_id: ScheduleId, deployment: DeploymentDep, session: SessionDep
) -> None:
    """Remove the schedule; the runs it queued are kept."""
    await store.delete_schedule(session, deployment, schedule_id)


@router.post("/{schedule_id}/trigger", status_code=status.HTTP_201_CREATED, **needs(Role.PLANNER))
async def trigger_schedule(
    name: str, schedule_id: ScheduleId, session: SessionDep, request: Request, token: TokenDep
) -> TriggerOut:
    """Queue the schedule's run now (409 while a run it queued is still waiting); its due
    times are unchanged. A planner may run a drift or plan schedule, an apply one needs
    the operator role."""
    # FOR SHARE, as POST /runs: the deployment is not deleted under the run being queued.
    deployment = await deployments.get_deployment(
        session, name, for_share=True, scope=scope_of(token)
    )
    row = await store.get_schedule(session, deployment, schedule_id)
    check_apply_role(role_of(token), row.kind, token.name)
    run_id = await store.trigger(
        session, deployment, schedule_id, actor=token.name, actor_id=token.id, now=utcnow()
    )
    out = TriggerOut(schedule=schedule_out(row, deployment), run_id=run_id)
    await session.commit()
    engine: Engine = request.app.state.engine
    engine.wake()
    return out


@all_router.get("", **needs(Role.VIEWER))
async def list_all_schedules(
    session: SessionDep,
    token: TokenDep,
    deployment: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ScheduleOut]:
    """Every schedule of the live deployments within the token's scope (or of one)."""
    scope = scope_of(token)
    rows = await store.list_schedules(session)
    return [
        schedule_out(s, d)
        for s, d in rows
        if scope.covers(d.name, d.labels) and (deployment is None or d.name == deployment)
    ]
