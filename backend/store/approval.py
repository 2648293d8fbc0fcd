"""Whether a plan may be applied: the stale-plan guard and the approval policies.

A plan is applied only as it was reviewed: not after the deployment's state moved on (a
newer state version than the one the plan was made from), not after a newer configuration
was uploaded, and not once it is older than the plan TTL. Each refusal says which and how
to re-plan. An apply or destroy goes on without a person only when its policy says so:
`always`, or `no-destroy` when the plan deletes and replaces nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import ApprovePolicy, ConfigVersion, Deployment, Run, StateVersion, utcnow


async def newest_state_version(session: AsyncSession, deployment_id: int) -> int | None:
    """The id of the deployment's newest state version (a deletion counts), None if none."""
    newest: int | None = await session.scalar(
        select(func.max(StateVersion.id)).where(StateVersion.deployment_id == deployment_id)
    )
    return newest


def replan_hint(run: Run, deployment: Deployment) -> str:
    return f"re-plan with `iac {run.operation} {deployment.name}`"


async def stale_reason(session: AsyncSession, run: Run, ttl_seconds: float) -> str:
    """Why the run's plan may no longer be applied ("" when it may)."""
    deployment = await session.get_one(Deployment, run.deployment_id)
    again = replan_hint(run, deployment)
    newest = await newest_state_version(session, run.deployment_id)
    if newest != run.plan_state_version:
        return (
            f"the state of {deployment.name!r} changed after this plan was made (state version "
            f"{newest} is newer than the plan's {run.plan_state_version or 'empty state'}): {again}"
        )
    newer = await newer_configuration(session, run)
    if newer:
        return f"{newer}: {again}"
    if run.planned_at is not None and utcnow() - run.planned_at > timedelta(seconds=ttl_seconds):
        return (
            f"the plan is older than the plan TTL ({ttl_seconds:g} s, IAC_PLAN_TTL; made "
            f"{run.planned_at.isoformat(timespec='seconds')}): {again}"
        )
    return ""


async def newer_configuration(session: AsyncSession, run: Run) -> str:
    """A configuration with other files uploaded after the run's, said so; else ""."""
    versions = await session.execute(
        select(ConfigVersion.id, ConfigVersion.version, ConfigVersion.sha256)
        .where(ConfigVersion.deployment_id == run.deployment_id)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    )
    latest = versions.first()
    if latest is None or latest.id == run.config_version_id:
        return ""
    planned = (
        await session.execute(
            select(ConfigVersion.version, ConfigVersion.sha256).where(
                ConfigVersion.id == run.config_version_id
            )
        )
    ).one()
    # The same files uploaded again (archives are normalised) change nothing.
    if latest.sha256 == planned.sha256:
        return ""
    return (
        f"a newer configuration (v{latest.version}) was uploaded after this plan's "
        f"(v{planned.version})"
    )


def policy_holds(policy: str, counts: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether `policy` applies a plan with these counts without a person, and why not."""
    if policy == ApprovePolicy.ALWAYS:
        return True, ""
    if policy == ApprovePolicy.NO_DESTROY:
        if counts is None:
            return False, "no-destroy: the plan's changes could not be read"
        destroy, replace = counts.get("destroy", 0), counts.get("replace", 0)
        if destroy or replace:
            return False, f"no-destroy: the plan destroys {destroy} and replaces {replace}"
        return True, ""
    return False, ""
