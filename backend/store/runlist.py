"""Reading runs for the API: one run with its names resolved, or a filtered page of runs.
Runs of a deleted deployment are hidden with it (until it is restored)."""

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


async def check_visible(session: AsyncSession, run_id: int) -> None:
    """NotFound unless the run exists and its deployment is not deleted (reads two columns)."""
    row = (
        await session.execute(
            select(Deployment.name, Deployment.deleted_at)
            .join(Run, Run.deployment_id == Deployment.id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None:
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
) -> list[RunRow]:
    query = _QUERY.where(Deployment.deleted_at.is_(None))
    if deployment is not None:
        query = query.where(Deployment.name == deployment)
    if status is not None:
        query = query.where(Run.status == status)
    rows = await session.execute(query.order_by(Run.id.desc()).limit(limit))
    return [(r[0], r[1], r[2]) for r in rows]
