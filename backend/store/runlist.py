"""Reading runs for the API: one run with its names resolved, or a filtered page of runs.
Runs of a deleted deployment are hidden with it (until it is restored)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.access import Scope
from backend.errors import NotFound
from backend.models import TERMINAL_STATUSES, ConfigVersion, Deployment, Run, RunEvent, utcnow

RunRow = tuple[Run, str, int]  # the run, its deployment's name, its config version

_QUERY = (
    select(Run, Deployment.name, ConfigVersion.version)
    .join(Deployment, Deployment.id == Run.deployment_id)
    .join(ConfigVersion, ConfigVersion.id == Run.config_version_id)
)


async def run_row(session: AsyncSession, run_id: int) -> RunRow:
    row = (
        await session.execute(_QUERY.add_columns(Deployment.deleted_at).where(Run.id == run_id))
    ).first()
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    if row[3] is not None:
        raise NotFound(
            f"run {run_id} belongs to the deleted deployment {row[1]!r}; restore the deployment "
            "to see it"
        )
    return row[0], row[1], row[2]


async def check_visible(session: AsyncSession, run_id: int, scope: Scope | None = None) -> None:
    """NotFound unless the run exists, its deployment is not deleted and (with `scope`) is
    inside the scope: outside, the run does not exist for the caller."""
    row = (
        await session.execute(
            select(Deployment.name, Deployment.labels, Deployment.deleted_at)
            .join(Run, Run.deployment_id == Deployment.id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None or (scope is not None and not scope.covers(row.name, row.labels)):
        raise NotFound(f"run {run_id} does not exist")
    if row.deleted_at is not None:
        raise NotFound(
            f"run {run_id} belongs to the deleted deployment {row.name!r}; restore the "
            "deployment to see it"
        )


async def list_runs(
    session: AsyncSession,
    *,
    deployment: str | None = None,
    status: str | None = None,
    limit: int = 100,
    scope: Scope | None = None,
) -> list[RunRow]:
    query = _QUERY.where(Deployment.deleted_at.is_(None))
    if scope is not None and not scope.unscoped:
        every = await session.execute(select(Deployment.id, Deployment.name, Deployment.labels))
        inside = [d.id for d in every if scope.covers(d.name, d.labels)]
        query = query.where(Deployment.id.in_(inside))
    if deployment is not None:
        query = query.where(Deployment.name == deployment)
    if status is not None:
        query = query.where(Run.status == status)
    rows = await session.execute(query.order_by(Run.id.desc()).limit(limit))
    return [(r[0], r[1], r[2]) for r in rows]


# A run's history, read as a timeline: after these events it waits (in the queue, for
# approval, for a runner to apply its plan), after `dispatched` a runner executes it,
# after its terminal status it has ended. Other events (state, cancel requests, adoption)
# change nothing.
WAITING_AFTER = frozenset({"queued", "requeued", "planned", "approved"})
RUNNING_AFTER = frozenset({"dispatched"})
TIMELINE_KINDS = WAITING_AFTER | RUNNING_AFTER | {s.value for s in TERMINAL_STATUSES}


@dataclass(frozen=True)
class RunTimes:
    """Seconds a run spent executing on runners, and waiting (queued, or for approval)."""

    running: float = 0.0
    waiting: float = 0.0


def run_times(
    created_at: datetime, events: Iterable[tuple[datetime, str]], now: datetime | None = None
) -> RunTimes:
    """A run's running and waiting time from its history (`events`: (at, kind), in order);
    a run that has not ended counts up to `now`."""
    running = waiting = 0.0
    state, since = "waiting", created_at
    for at, kind in events:
        if kind in RUNNING_AFTER:
            new = "running"
        elif kind in WAITING_AFTER:
            new = "waiting"
        elif kind in TIMELINE_KINDS:
            new = "ended"
        else:
            continue
        elapsed = max((at - since).total_seconds(), 0.0)
        if state == "running":
            running += elapsed
        elif state == "waiting":
            waiting += elapsed
        state, since = new, at
    if state != "ended":
        elapsed = max(((now or utcnow()) - since).total_seconds(), 0.0)
        if state == "running":
            running += elapsed
        else:
            waiting += elapsed
    return RunTimes(round(running, 3), round(waiting, 3))


def counted_until(run: Run, now: datetime | None = None) -> datetime:
    """Up to when a run's time counts: its end once it has ended (even if its history
    lacks the terminal event), else now."""
    if run.status in TERMINAL_STATUSES:
        return run.ended_at or run.created_at
    return now or utcnow()


async def times_of(session: AsyncSession, runs: Sequence[Run]) -> dict[int, RunTimes]:
    """`run_times` of each run, from one query of their timeline events."""
    if not runs:
        return {}
    rows = await session.execute(
        select(RunEvent.run_id, RunEvent.at, RunEvent.kind)
        .where(RunEvent.run_id.in_([r.id for r in runs]), RunEvent.kind.in_(TIMELINE_KINDS))
        .order_by(RunEvent.run_id, RunEvent.id)
    )
    events: dict[int, list[tuple[datetime, str]]] = {}
    for run_id, at, kind in rows:
        events.setdefault(run_id, []).append((at, kind))
    now = utcnow()
    return {
        r.id: run_times(r.created_at, events.get(r.id, []), counted_until(r, now)) for r in runs
    }
