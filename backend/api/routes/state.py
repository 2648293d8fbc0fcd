"""A deployment's Terraform state for API users: its versions, its lock holder, a download.

Terraform itself reaches the state through its runner (see `backend.state_service`).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from backend.api.deps import (
    CipherDep,
    DeploymentDep,
    IdPath,
    SessionDep,
)
from backend.api.routing import CheckedRoute
from backend.models import Run
from backend.schemas import StateLockOut, StateOut, StateVersionOut
from backend.store import state

api_router = APIRouter(prefix="/deployments/{name}/state", tags=["state"], route_class=CheckedRoute)


@api_router.get("")
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
    "/versions/{version_id}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def download_state(
    version_id: IdPath, deployment: DeploymentDep, session: SessionDep, cipher: CipherDep
) -> Response:
    row = await state.get_state_version(session, deployment, version_id)
    return Response(cipher.unseal(row.data), media_type="application/json")
