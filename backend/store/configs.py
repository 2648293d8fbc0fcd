"""Configuration versions: each upload of a deployment's archive becomes a new immutable version."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from backend.archive import Limits, normalize
from backend.errors import NotFound
from backend.models import ConfigVersion, Deployment
from backend.store.deployments import get_deployment


async def add_config_version(
    session: AsyncSession, deployment_name: str, upload: bytes, limits: Limits
) -> ConfigVersion:
    """Validate ``upload`` (tar.gz or zip) and store it, normalised, as the next version."""
    # Validation decompresses and repacks: CPU and memory work kept off the event loop.
    archive = await asyncio.to_thread(normalize, upload, limits)
    # Lock the deployment row (PostgreSQL) so two uploads cannot both take the same number;
    # SQLite transactions are already serialised by BEGIN IMMEDIATE.
    deployment = await get_deployment(session, deployment_name, for_update=True)
    current = await session.scalar(
        select(func.max(ConfigVersion.version)).where(ConfigVersion.deployment_id == deployment.id)
    )
    row = ConfigVersion(
        deployment_id=deployment.id,
        version=(current or 0) + 1,
        archive=archive.data,
        sha256=archive.sha256,
        size=len(archive.data),
    )
    session.add(row)
    await session.flush()
    return row


async def list_config_versions(
    session: AsyncSession, deployment: Deployment
) -> Sequence[ConfigVersion]:
    """The deployment's versions, newest first, without their archives."""
    rows = await session.scalars(
        select(ConfigVersion)
        .options(defer(ConfigVersion.archive, raiseload=True))
        .where(ConfigVersion.deployment_id == deployment.id)
        .order_by(ConfigVersion.version.desc())
    )
    return rows.all()


async def get_config_version(
    session: AsyncSession, deployment: Deployment, version: int | None = None
) -> ConfigVersion:
    """Version ``version`` of the deployment's config (the latest when None), with its archive."""
    query = select(ConfigVersion).where(ConfigVersion.deployment_id == deployment.id)
    if version is None:
        query = query.order_by(ConfigVersion.version.desc()).limit(1)
    else:
        query = query.where(ConfigVersion.version == version)
    row = await session.scalar(query)
    if row is None:
        if version is None:
            raise NotFound(
                f"deployment {deployment.name!r} has no configuration yet; upload one to "
                f"/api/v1/deployments/{deployment.name}/config"
            )
        raise NotFound(f"deployment {deployment.name!r} has no config version {version}")
    return row
