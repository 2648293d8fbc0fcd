"""Reading runs for the API: one run with its names resolved, or a filtered page of runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import NotFound
from backend.models import ConfigVersion, Deployment, Run

RunRow = tuple[Run, str, int]  # the run, its deployment's name, its config version

_QUERY = (
    select(Run, Deployment.name, ConfigVersion.version)
    .join(Deployment, Deployment.id == Run.deployment_id)
    .join(ConfigVersion, ConfigVersion.id == Run.config_version_id)
)


async def run_row(session: AsyncSession, run_id: int) -> RunRow:
    row = (await session.execute(_QUERY.where(Run.id == run_id))).first()
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    return row[0], row[1], row[2]


async def list_runs(
    session: AsyncSession,
    *,
    deployment: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[RunRow]:
    query = _QUERY
    if deployment is not None:
        query = query.where(Deployment.name == deployment)
    if status is not None:
        query = query.where(Run.status == status)
    rows = await session.execute(query.order_by(Run.id.desc()).limit(limit))
    return [(r[0], r[1], r[2]) for r in rows]
