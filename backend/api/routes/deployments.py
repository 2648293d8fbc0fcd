"""Deployment endpoints: create, list, show, change settings, delete (kept until purged),
restore, purge, and configuration archive uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.datastructures import UploadFile

from backend.access import Role
from backend.api.deps import (
    CipherDep,
    DatabaseDep,
    DeploymentDep,
    IdPath,
    SessionDep,
    SettingsDep,
    TokenDep,
    needs,
    scope_of,
)
from backend.api.routing import CheckedRoute
from backend.archive import Limits
from backend.config import Settings
from backend.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from backend.models import Deployment
from backend.schemas.deployments import (
    ConfigVersionOut,
    DeploymentCreate,
    DeploymentOut,
    DeploymentUpdate,
)
from backend.store import configs, deployments

router = APIRouter(prefix="/deployments", tags=["deployments"], route_class=CheckedRoute)

# Room for multipart boundaries and part headers on top of the archive itself.
MULTIPART_SLACK = 64 * 1024

UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "description": "A tar.gz or zip archive: the raw body, or multipart field 'file'.",
        "content": {
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded archive's bytes, reading no more than ``limit`` + 1 of them."""
    too_large = TooLarge(f"configuration archive is larger than the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise too_large
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Invalid("multipart upload needs the archive in a file field named 'file'")
            data = await upload.read(limit + 1)
    else:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise too_large
        data = bytes(buf)
    if len(data) > limit:
        raise too_large
    if not data:
        raise Invalid(
            "empty upload: send the tar.gz or zip archive as the request body or as the "
            "multipart field 'file'"
        )
    return data


def deployment_out(row: Deployment, settings: Settings) -> DeploymentOut:
    out = DeploymentOut.model_validate(row)
    if row.deleted_at is not None:
        out.purge_after = deployments.purge_after(row.deleted_at, settings.deleted_retention_days)
    return out


@router.post("", status_code=status.HTTP_201_CREATED, **needs(Role.ADMIN))
async def create_deployment(
    body: DeploymentCreate, session: SessionDep, token: TokenDep
) -> DeploymentOut:
    scope = scope_of(token)
    if not scope.covers(body.name, body.labels):
        raise Forbidden(
            f"token {token.name!r} may only create deployments within its scope "
            f"({scope.describe()}): give a name and labels it covers"
        )
    try:
        await deployments.check_in_scope(session, body.name, scope)
    except NotFound:
        # Taken by a deployment this token may not see: say no more than that.
        raise Conflict(f"the name {body.name!r} is not available") from None
    row = await deployments.create_deployment(session, **body.model_dump())
    return DeploymentOut.model_validate(row)


@router.get("", **needs(Role.VIEWER))
async def list_deployments(
    session: SessionDep,
    settings: SettingsDep,
    token: TokenDep,
    deleted: Annotated[
        bool, Query(description="List the deleted deployments (not yet purged) instead.")
    ] = False,
) -> list[DeploymentOut]:
    scope = scope_of(token)
    rows = await deployments.list_deployments(session, deleted=deleted)
    return [deployment_out(d, settings) for d in rows if scope.covers(d.name, d.labels)]


@router.get("/{name}", **needs(Role.VIEWER))
async def get_deployment(
    deployment: DeploymentDep, session: SessionDep, cipher: CipherDep
) -> DeploymentOut:
    out = DeploymentOut.model_validate(deployment)
    out.managed_resources = await deployments.managed_resources(session, cipher, deployment.id)
    return out


@router.patch("/{name}", **needs(Role.ADMIN))
async def update_deployment(
    body: DeploymentUpdate, deployment: DeploymentDep, session: SessionDep, token: TokenDep
) -> DeploymentOut:
    scope = scope_of(token)
    if body.labels is not None and not scope.covers(deployment.name, body.labels):
        raise Forbidden(
            f"these labels would take {deployment.name!r} out of token {token.name!r}'s "
            f"scope ({scope.describe()})"
        )
    row = await deployments.update_deployment(session, deployment, **body.model_dump())
    return DeploymentOut.model_validate(row)


@router.delete(
    "/{name}",
    responses={
        200: {
            "model": DeploymentOut,
            "description": "Deleted: kept until `purge_after`, restorable until then.",
        },
        204: {"description": "Purged (with purge=true)."},
    },
    **needs(Role.ADMIN),
)
async def delete_deployment(
    name: str,
    session: SessionDep,
    token: TokenDep,
    settings: SettingsDep,
    cipher: CipherDep,
    force: Annotated[
        bool, Query(description="Delete although its latest state still manages resources.")
    ] = False,
    purge: Annotated[
        bool,
        Query(description="Remove an already deleted deployment and all it owns for good."),
    ] = False,
) -> Response:
    """Delete the deployment: it is kept, hidden, with its state versions, runs, logs,
    variables and configurations for IAC_DELETED_RETENTION_DAYS, restorable until then.
    Refused while a run is active, its state is locked, or (without force=true) its latest
    state manages resources. With purge=true, remove a deleted deployment for good."""
    if purge:
        await deployments.check_in_scope(session, name, scope_of(token))
        await deployments.purge_deployment(session, name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    await deployments.check_in_scope(session, name, scope_of(token))
    row = await deployments.delete_deployment(session, cipher, name, force=force)
    body = deployment_out(row, settings).model_dump_json()
    return Response(body, media_type="application/json")


@router.post("/{name}/restore", **needs(Role.ADMIN))
async def restore_deployment(name: str, session: SessionDep, token: TokenDep) -> DeploymentOut:
    """Bring back a deleted deployment with everything it owned."""
    await deployments.check_in_scope(session, name, scope_of(token))
    return DeploymentOut.model_validate(await deployments.restore_deployment(session, name))


@router.post(
    "/{name}/config",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={**UPLOAD_DOC, **needs(Role.ADMIN)["openapi_extra"]},
    dependencies=needs(Role.ADMIN)["dependencies"],
)
async def upload_config(
    name: str,
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    token: TokenDep,
) -> ConfigVersionOut:
    # Outside the token's scope the deployment does not exist, whatever the body. The scope
    # is checked in a short transaction of its own and the body read after it, so no
    # transaction is open while the body arrives.
    async with database.session() as short:
        await deployments.check_in_scope(short, name, scope_of(token))
    data = await read_upload(request, settings.max_config_bytes)
    limits = Limits(settings.max_config_files, settings.max_config_unpacked_bytes)
    row = await configs.add_config_version(session, name, data, limits)
    return ConfigVersionOut.model_validate(row)


@router.get("/{name}/config", **needs(Role.VIEWER))
async def list_config_versions(
    deployment: DeploymentDep, session: SessionDep
) -> list[ConfigVersionOut]:
    rows = await configs.list_config_versions(session, deployment)
    return [ConfigVersionOut.model_validate(r) for r in rows]


@router.get(
    "/{name}/config/{version}",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
    **needs(Role.ADMIN),
)
async def download_config(
    version: IdPath, deployment: DeploymentDep, session: SessionDep
) -> Response:
    row = await configs.get_config_version(session, deployment, version)
    filename = f"{deployment.name}-v{row.version}.tar.gz"
    return Response(
        row.archive,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
