"""Terraform state over HTTP.

``router`` is Terraform's ``http`` backend (GET, POST, DELETE, LOCK, UNLOCK) at
``/state/{deployment}``, authenticated with per-run basic credentials instead of API tokens.
``api_router`` shows a deployment's state versions and lock holder to API users.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from backend.api.deps import (
    CipherDep,
    DatabaseDep,
    DeploymentDep,
    IdPath,
    SessionDep,
    SettingsDep,
)
from backend.api.routing import CheckedRoute
from backend.crypto import Cipher
from backend.db import Database
from backend.errors import Forbidden, TooLarge, Unauthenticated
from backend.models import Run
from backend.schemas import StateLockOut, StateOut, StateVersionOut
from backend.store import state
from backend.store.state import StateAccess

router = APIRouter(prefix="/state", tags=["terraform state backend"], route_class=CheckedRoute)
api_router = APIRouter(prefix="/deployments/{name}/state", tags=["state"], route_class=CheckedRoute)

basic = HTTPBasic(auto_error=False, description="user = run id, password = the run's token")
REALM = {"WWW-Authenticate": 'Basic realm="iac-runner state"'}
# JSON parsing of a state this large is worth a worker thread.
PARSE_OFF_LOOP_BYTES = 256 * 1024

LockIdQuery = Annotated[str | None, Query(alias="ID", description="The writer's lock id.")]


async def state_access(
    deployment: str,
    database: DatabaseDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> StateAccess:
    if credentials is None:
        raise HTTPException(401, "state access needs HTTP basic auth", headers=REALM)
    try:
        # Its own short transaction, ended before the (possibly large) body is read.
        async with database.session() as session:
            return await state.authorize_run(
                session, deployment, credentials.username, credentials.password
            )
    except Unauthenticated as exc:
        raise HTTPException(401, str(exc), headers=REALM) from None
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None


AccessDep = Annotated[StateAccess, Depends(state_access)]


@dataclass(frozen=True)
class StateTransaction:
    access: StateAccess
    session: AsyncSession


async def state_transaction(
    deployment: str,
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> AsyncIterator[StateTransaction]:
    """The access check and the request's work in one transaction, for requests whose body
    is small (or absent); committed before the response is sent. (The database comes
    straight from the app: a plain-function dependency would cost a worker thread hop.)"""
    if credentials is None:
        raise HTTPException(401, "state access needs HTTP basic auth", headers=REALM)
    database: Database = request.app.state.db
    async with database.session() as session:
        try:
            access = await state.authorize_run(
                session, deployment, credentials.username, credentials.password
            )
        except Unauthenticated as exc:
            raise HTTPException(401, str(exc), headers=REALM) from None
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        yield StateTransaction(access, session)


TransactionDep = Annotated[StateTransaction, Depends(state_transaction, scope="function")]


async def read_body(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body is larger than the limit of {limit} bytes")
    return bytes(buf)


@router.get("/{deployment}")
async def get_state(tx: TransactionDep, request: Request) -> Response:
    current = await state.current_state(tx.session, tx.access.deployment.id)
    if current is None:
        # Terraform reads 204 (like 404) as "no state yet".
        return Response(status_code=204)
    cipher: Cipher = request.app.state.cipher
    return Response(cipher.unseal(current.data), media_type="application/json")


@router.post("/{deployment}")
async def post_state(
    access: AccessDep,
    session: SessionDep,
    settings: SettingsDep,
    cipher: CipherDep,
    request: Request,
    lock_id: LockIdQuery = None,
) -> Response:
    data = await read_body(request, settings.max_state_bytes)
    md5 = request.headers.get("content-md5")
    if len(data) > PARSE_OFF_LOOP_BYTES:
        parsed = await asyncio.to_thread(state.parse_state, data, md5)
    else:
        parsed = state.parse_state(data, md5)
    await state.write_state(
        session,
        access.deployment,
        data,
        lock_id=lock_id,
        run_id=access.run.id,
        parsed=parsed,
        cipher=cipher,
    )
    return Response(status_code=200)


@router.delete("/{deployment}")
async def delete_state(tx: TransactionDep, lock_id: LockIdQuery = None) -> Response:
    access = tx.access
    await state.delete_state(tx.session, access.deployment, lock_id=lock_id, run_id=access.run.id)
    return Response(status_code=200)


@router.api_route("/{deployment}", methods=["LOCK"])
async def lock_state(tx: TransactionDep, request: Request) -> dict[str, Any]:
    info = state.parse_lock_info(await read_body(request, 64 * 1024))
    await state.lock_state(tx.session, tx.access.deployment, info, tx.access.run.id)
    return info


@router.api_route("/{deployment}", methods=["UNLOCK"])
async def unlock_state(tx: TransactionDep, request: Request) -> Response:
    body = await read_body(request, 64 * 1024)
    lock_id = state.parse_lock_info(body)["ID"] if body.strip() else None
    await state.unlock_state(tx.session, tx.access.deployment, lock_id, tx.access.run.id)
    return Response(status_code=200)


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
