"""Schedules: a deployment's recurring runs (create, list, look up, change, delete) and the
claim by which exactly one backend queues each due time's run.

The claim (``fire``) is one conditional UPDATE of the schedule's ``next_run_at``, from the
value the backend saw to the next due time after *now*, in the transaction that queues the
run. Any number of backends may try it at once: the database lets one UPDATE match and the
others find the value moved on, so each due time queues one run. A backend that was down
over several due times finds the schedule due once and moves it past now: one run, not one
per missed time.

The duplicate rule: a schedule never queues a run while a run it queued earlier is still
waiting in the queue (a busy runner pool would otherwise pile them up); the due time is
recorded as skipped, with the reason, and the schedule moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend import cron
from backend.access import Role, Scope
from backend.errors import Conflict, Invalid, NotFound
from backend.models import (
    ApiToken,
    ApprovePolicy,
    Deployment,
    Operation,
    Run,
    RunStatus,
    Schedule,
    ScheduleKind,
    utcnow,
)
from backend.store import audit
from backend.store import runs as run_store
from backend.store.deployments import check_policy

# Enough for any real use (nightly drift, a weekday plan, a weekly apply...), few enough
# that a mistaken script cannot fill the scheduler's passes.
MAX_PER_DEPLOYMENT = 50

OPERATION_OF = {
    ScheduleKind.DRIFT.value: Operation.DRIFT.value,
    ScheduleKind.PLAN.value: Operation.PLAN.value,
    ScheduleKind.APPLY.value: Operation.APPLY.value,
}


def check_kind(kind: str) -> str:
    if kind not in OPERATION_OF:
        raise Invalid(f"schedule kind {kind!r} is invalid: use 'drift', 'plan' or 'apply'")
    return kind


def check_approval(deployment: Deployment, kind: str, auto_approve: str) -> None:
    """Only an apply is approved, and never automatically where the deployment wants
    another approver than the run's creator (as store.runs.create_run refuses it)."""
    check_policy(auto_approve)
    if auto_approve != ApprovePolicy.NEVER.value and kind != ScheduleKind.APPLY.value:
        raise Invalid(
            f"auto_approve {auto_approve!r} applies to apply schedules only: a {kind} run is "
            "never applied"
        )
    if deployment.require_other_approver and auto_approve != ApprovePolicy.NEVER.value:
        raise Conflict(
            f"deployment {deployment.name!r} requires another approver than the run's "
            f"creator: a scheduled apply cannot be auto-approved ({auto_approve})"
        )


async def create_schedule(
    session: AsyncSession,
    deployment: Deployment,
    *,
    cron_expr: str,
    timezone: str = cron.DEFAULT_ZONE,
    kind: str = ScheduleKind.DRIFT.value,
    auto_approve: str = ApprovePolicy.NEVER.value,
    enabled: bool = True,
    created_by: str | None = None,
    created_by_token: int | None = None,
    now: datetime | None = None,
) -> Schedule:
    expr = cron.check_cron(cron_expr)
    zone = cron.check_timezone(timezone)
    check_approval(deployment, check_kind(kind), auto_approve)
    count = await session.scalar(
        select(func.count()).select_from(Schedule).where(Schedule.deployment_id == deployment.id)
    )
    if (count or 0) >= MAX_PER_DEPLOYMENT:
        raise Conflict(
            f"deployment {deployment.name!r} has {count} schedules, the most it may have; "
            "remove one first"
        )
    row = Schedule(
        deployment_id=deployment.id,
        cron=expr,
        timezone=zone,
        kind=kind,
        auto_approve=auto_approve,
        enabled=enabled,
        next_run_at=cron.next_after(expr, zone, now or utcnow()),
        last_skipped="",
        created_by=created_by,
        created_by_token=created_by_token,
    )
    session.add(row)
    await session.flush()
    return row


async def get_schedule(
    session: AsyncSession, deployment: Deployment, schedule_id: int, *, for_update: bool = False
) -> Schedule:
    query = select(Schedule).where(
        Schedule.id == schedule_id, Schedule.deployment_id == deployment.id
    )
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"deployment {deployment.name!r} has no schedule {schedule_id}")
    return row


async def list_schedules(
    session: AsyncSession, deployment: Deployment | None = None
) -> Sequence[tuple[Schedule, Deployment]]:
    """The schedules of one deployment, or of every live one, with their deployment."""
    query = (
        select(Schedule, Deployment)
        .join(Deployment, Schedule.deployment_id == Deployment.id)
        .where(Deployment.deleted_at.is_(None))
        .order_by(Deployment.name, Schedule.id)
    )
    if deployment is not None:
        query = query.where(Schedule.deployment_id == deployment.id)
    return [(s, d) for s, d in (await session.execute(query)).all()]


async def update_schedule(
    session: AsyncSession,
    deployment: Deployment,
    schedule: Schedule,
    *,
    cron_expr: str | None = None,
    timezone: str | None = None,
    kind: str | None = None,
    auto_approve: str | None = None,
    enabled: bool | None = None,
    changed_by: tuple[str, int] | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Change what is given (None: unchanged). A new expression or zone, or enabling a
    disabled schedule, sets the next due time from now: the times it was off are not made
    up for. The token that changes it (`changed_by`: name, id) owns it from then on."""
    retime = False
    if changed_by is not None:
        schedule.created_by, schedule.created_by_token = changed_by
    if cron_expr is not None:
        retime |= (expr := cron.check_cron(cron_expr)) != schedule.cron
        schedule.cron = expr
    if timezone is not None:
        retime |= cron.check_timezone(timezone) != schedule.timezone
        schedule.timezone = timezone
    if kind is not None:
        schedule.kind = check_kind(kind)
        if kind != ScheduleKind.APPLY.value and auto_approve is None:
            schedule.auto_approve = ApprovePolicy.NEVER.value  # only an apply has one
    if auto_approve is not None:
        schedule.auto_approve = auto_approve
    if kind is not None or auto_approve is not None or enabled:
        # Not on disabling: a schedule four eyes now refuses can always be turned off.
        check_approval(deployment, schedule.kind, schedule.auto_approve)
    if enabled is not None:
        retime |= enabled and not schedule.enabled
        schedule.enabled = enabled
    if retime:
        schedule.next_run_at = cron.next_after(schedule.cron, schedule.timezone, now or utcnow())
    await session.flush()
    return schedule


async def delete_schedule(session: AsyncSession, deployment: Deployment, schedule_id: int) -> None:
    """Remove the schedule; the runs it queued stay, naming it."""
    await get_schedule(session, deployment, schedule_id)
    await session.execute(delete(Schedule).where(Schedule.id == schedule_id))


async def due(session: AsyncSession, now: datetime, limit: int) -> list[tuple[int, datetime]]:
    """(id, next_run_at) of the enabled schedules of live deployments due at `now`, the
    longest overdue first."""
    rows = await session.execute(
        select(Schedule.id, Schedule.next_run_at)
        .join(Deployment, Schedule.deployment_id == Deployment.id)
        .where(
            Schedule.enabled.is_(True),
            Schedule.next_run_at <= now,
            Deployment.deleted_at.is_(None),
        )
        .order_by(Schedule.next_run_at, Schedule.id)
        .limit(limit)
    )
    return [(r.id, r.next_run_at) for r in rows]


@dataclass(frozen=True)
class Fired:
    """What one claimed due time did: the run it queued, or why it queued none."""

    schedule_id: int
    due_at: datetime
    run_id: int | None = None
    skipped: str = ""


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


async def fire(
    session: AsyncSession, schedule_id: int, seen: datetime, now: datetime
) -> Fired | None:
    """Claim the due time `seen` of the schedule and queue its run, in `session`'s
    transaction; None when another backend claimed it first (or the schedule was changed,
    disabled, deleted, or its deployment deleted, since it was read)."""
    # The deployment first, FOR SHARE: it cannot be deleted until this run is queued (then
    # its delete is refused: an active run), as for POST /runs.
    deployment = await session.scalar(
        select(Deployment)
        .join(Schedule, Schedule.deployment_id == Deployment.id)
        .where(Schedule.id == schedule_id)
        .with_for_update(read=True, of=Deployment)
    )
    schedule = await session.get(Schedule, schedule_id)
    if deployment is None or schedule is None or deployment.deleted_at is not None:
        return None
    disabled = ""
    try:
        following = cron.next_after(schedule.cron, schedule.timezone, now)
        values: dict[str, object] = {"next_run_at": following, "last_run_at": seen}
    except Invalid as exc:
        # Its zone left the zone database since it was stored, say: never due again.
        disabled = f"disabled: {exc}"
        values = {"enabled": False, "last_skipped": f"{_when(seen)}: {disabled}"}
    claimed = await session.execute(
        update(Schedule)
        .where(
            Schedule.id == schedule_id,
            Schedule.next_run_at == seen,
            Schedule.enabled.is_(True),
            # As read: the next due time above was computed from them.
            Schedule.cron == schedule.cron,
            Schedule.timezone == schedule.timezone,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    await session.refresh(schedule)  # as it is now that this transaction holds it
    actor = f"schedule {schedule_id}"
    run_id, skipped = None, disabled or await owner_refusal(session, schedule, deployment, now)
    if not skipped:
        run_id, skipped = await _queue(
            session, schedule, deployment, actor=actor, comment=f"due {seen.isoformat()}",
            actor_id=schedule.created_by_token,
        )  # fmt: skip
        if skipped:
            schedule.last_skipped = f"{_when(seen)}: {skipped}"
    await audit.append(
        session,
        actor=actor,
        action="schedule run",
        target=f"name={deployment.name} schedule_id={schedule_id}",
        result=f"queued run {run_id}" if run_id else f"skipped: {skipped}",
    )
    await session.flush()
    return Fired(schedule_id, seen, run_id, skipped)


async def owner_refusal(
    session: AsyncSession, schedule: Schedule, deployment: Deployment, now: datetime
) -> str:
    """Why the token that owns the schedule may no longer start its runs ("" if it may):
    revoked, expired, of a lower role than the schedule's kind needs, or scoped away from
    the deployment. A schedule acts for its owner, never beyond what the owner may do."""
    if schedule.created_by_token is None:
        return ""
    token = await session.get(ApiToken, schedule.created_by_token)
    owner = f"its owner, token {schedule.created_by!r},"
    fix = "an operator who may run it takes it over by changing it (PATCH)"
    if token is None or token.revoked:
        return f"{owner} was revoked; {fix}"
    if token.expires_at is not None and token.expires_at <= now:
        return f"{owner} expired; {fix}"
    needed = Role.OPERATOR if schedule.kind == ScheduleKind.APPLY.value else Role.PLANNER
    if not Role(token.role).includes(needed):
        return f"{owner} is a {token.role}, and a {schedule.kind} run needs {needed}; {fix}"
    if not Scope.of(token.scope).covers(deployment.name, deployment.labels):
        return f"{owner} no longer has deployment {deployment.name!r} in its scope; {fix}"
    return ""


async def _queue(
    session: AsyncSession,
    schedule: Schedule,
    deployment: Deployment,
    *,
    actor: str,
    comment: str,
    actor_id: int | None = None,
) -> tuple[int | None, str]:
    """Queue the schedule's run, unless a run it queued is still waiting: (run id, "") or
    (None, why not)."""
    waiting = await session.scalar(
        select(Run.id)
        .where(Run.schedule_id == schedule.id, Run.status == RunStatus.QUEUED.value)
        .order_by(Run.id)
        .limit(1)
    )
    if waiting is not None:
        return None, f"run {waiting} of this schedule is still queued"
    apply = schedule.kind == ScheduleKind.APPLY.value
    try:
        # A savepoint: a refusal (no configuration uploaded, four eyes turned on since)
        # leaves the claim in place, recorded as a skip.
        async with session.begin_nested():
            run = await run_store.create_run(
                session,
                deployment,
                OPERATION_OF[schedule.kind],
                approve_policy=schedule.auto_approve if apply else None,
                actor=actor,
                actor_id=actor_id,
                comment=comment,
                schedule_id=schedule.id,
            )
    except (Conflict, Invalid, NotFound) as exc:
        return None, str(exc)
    schedule.last_run_id = run.id
    schedule.last_skipped = ""
    return run.id, ""


async def trigger(
    session: AsyncSession,
    deployment: Deployment,
    schedule_id: int,
    *,
    actor: str,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Queue the schedule's run now ("run now"), under the same duplicate rule (Conflict);
    its due times are unchanged. The id of the run."""
    # Locked like a claim: a due time fired meanwhile sees this run, and skips.
    schedule = await get_schedule(session, deployment, schedule_id, for_update=True)
    run_id, refused = await _queue(
        session, schedule, deployment, actor=actor, actor_id=actor_id, comment="run now"
    )
    if run_id is None:
        raise Conflict(f"schedule {schedule_id} queues nothing now: {refused}")
    schedule.last_run_at = now or utcnow()
    await session.flush()
    return run_id
