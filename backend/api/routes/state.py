"""A deployment's Terraform state for API users: its versions, its lock holder (and a
force-unlock), a download, its outputs and the resources it records.

Terraform itself reaches the state through its runner (see `backend.state_service`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from backend import state_views
from backend.access import Role
from backend.api.deps import CipherDep, DeploymentDep, IdPath, SessionDep, TokenDep, needs, role_of
from backend.api.routing import CheckedRoute
from backend.crypto import Cipher
from backend.errors import Conflict, Forbidden
from backend.models import STATE_ACCESS_STATUSES, Deployment, Run
from backend.schemas.runs import Decision
from backend.schemas.state import OutputOut, ResourceOut, StateLockOut, StateOut, StateVersionOut
from backend.store import state, variables

api_router = APIRouter(prefix="/deployments/{name}", tags=["state"], route_class=CheckedRoute)


@api_router.get("/state", **needs(Role.VIEWER))
async def show_state(deployment: DeploymentDep, session: SessionDep) -> StateOut:
    lock = await state.get_lock(session, deployment.id)
    lock_out = None
    if lock is not None:
        run = await session.get(Run, lock.run_id) if lock.run_id is not None else None
        lock_out = StateLockOut(
            lock_id=lock.lock_id,
            run_id=lock.run_id,
            runner_id=run.runner_id if run is not None else None,
            created_at=lock.created_at,
            info=lock.info,
        )
    versions = [
        StateVersionOut.model_validate(v).model_copy(update={"deleted": v.md5 == state.EMPTY_MD5})
        for v in await state.list_state_versions(session, deployment.id)
    ]
    return StateOut(lock=lock_out, versions=versions)


@api_router.get(
    "/state/versions/{version_id}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
    **needs(Role.ADMIN),
)
async def download_state(
    version_id: IdPath, deployment: DeploymentDep, session: SessionDep, cipher: CipherDep
) -> Response:
    row = await state.get_state_version(session, deployment, version_id)
    return Response(cipher.unseal(row.data), media_type="application/json")


async def _latest(session: AsyncSession, cipher: Cipher, deployment: Deployment) -> bytes:
    row = await state.current_state(session, deployment.id)
    return cipher.unseal(row.data) if row is not None else b""


@api_router.get("/outputs", **needs(Role.VIEWER))
async def show_outputs(
    deployment: DeploymentDep,
    session: SessionDep,
    cipher: CipherDep,
    token: TokenDep,
    reveal: Annotated[
        bool, Query(description="Show sensitive values too: admin tokens only (state content).")
    ] = False,
) -> list[OutputOut]:
    """The outputs of the latest state; a sensitive one (or one holding a sensitive
    variable's value) as '(sensitive value)', unless an admin asks to reveal them."""
    if reveal and not role_of(token).includes(Role.ADMIN):
        raise Forbidden(
            f"revealing sensitive outputs needs the admin role (state content); token "
            f"{token.name!r} is a {role_of(token)}"
        )
    data = await _latest(session, cipher, deployment)
    secrets: list[str] = []
    if not reveal:
        secrets = (await variables.run_environment(session, cipher, deployment)).secrets()
    found = await asyncio.to_thread(state_views.outputs, data, secrets, reveal=reveal)
    return [OutputOut.model_validate(o, from_attributes=True) for o in found]


@api_router.get("/state/resources", **needs(Role.VIEWER))
async def list_resources(
    deployment: DeploymentDep, session: SessionDep, cipher: CipherDep
) -> list[ResourceOut]:
    """The resource instances of the latest state (addresses, no attribute values)."""
    data = await _latest(session, cipher, deployment)
    found = await asyncio.to_thread(state_views.resources, data)
    return [ResourceOut.model_validate(r, from_attributes=True) for r in found]


@api_router.post("/state/unlock", **needs(Role.OPERATOR))
async def force_unlock(
    deployment: DeploymentDep, session: SessionDep, token: TokenDep, body: Decision | None = None
) -> StateOut:
    """Release a state lock whose holder is gone (its run ended, or no run holds it); a
    lock of a run still executing is refused: cancel the run instead."""
    lock = await state.get_lock(session, deployment.id)
    if lock is None:
        raise Conflict(f"the state of {deployment.name!r} is not locked")
    if lock.run_id is not None:
        holder = await session.get(Run, lock.run_id)
        if holder is not None and holder.status in STATE_ACCESS_STATUSES:
            raise Conflict(
                f"the state of {deployment.name!r} is locked by run {lock.run_id}, which is "
                f"{holder.status}: cancel it (`iac runs cancel {lock.run_id}`), which releases "
                "the lock"
            )
    comment = body.comment if body else ""
    reason = f"force-unlocked by {token.name}" + (f": {comment}" if comment else "")
    await state.release_lock(session, deployment.id, reason, actor=token.name, comment=comment)
    return await show_state(deployment, session)
