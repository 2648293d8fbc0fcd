"""FastAPI dependencies as ``Annotated`` aliases: the DB session, settings, cipher, the API
token check, and looking up a deployment named in the path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from backend.access import Role, Scope
from backend.api.errors import STATUS, describe_validation
from backend.api.routing import API_PREFIX
from backend.config import Settings
from backend.crypto import Cipher
from backend.db import Database
from backend.models import ApiToken, Deployment
from backend.store import audit, deployments, runlist, tokens
from backend.store.validation import MAX_ID


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.db
    async with database.session() as session:
        yield session


# scope="function": the transaction commits before the response is sent, so a client that
# got a 2xx always finds its write in place, and a failed commit is an error, not a lie.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


# The dependencies below are `async def` although they only read app.state: FastAPI runs a
# plain `def` dependency in a worker thread, a hop that costs more than the function itself.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_cipher(request: Request) -> Cipher:
    cipher: Cipher = request.app.state.cipher
    return cipher


CipherDep = Annotated[Cipher, Depends(get_cipher)]

bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer <token>")


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


DatabaseDep = Annotated[Database, Depends(get_database)]


async def require_token(
    request: Request,
    database: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiToken:
    # A short transaction of its own: the route's transaction should start only when the
    # route needs it (on SQLite every transaction holds the write lock), not while a large
    # request body is still arriving. A refusal is an entry of the audit log.
    async with database.session() as session:
        token = None
        if credentials is not None:
            token = await tokens.authenticate(session, credentials.credentials)
        if token is None:
            why = "missing API token" if credentials is None else "invalid API token"
            await Entry.of(request, None).write(session, f"401: {why}")
    if credentials is None:
        raise HTTPException(
            401,
            "missing API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token is None:
        raise HTTPException(
            401,
            "invalid, expired or revoked API token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return token


TokenDep = Annotated[ApiToken, Depends(require_token)]


def role_of(token: ApiToken) -> Role:
    return Role(token.role)


def scope_of(token: ApiToken) -> Scope:
    return Scope.of(token.scope)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def _action(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path).removeprefix(API_PREFIX)
    return f"{request.method} {path}"


# Body fields that say what a request is about, kept in its audit entry: never a value
# (a variable's, a token's), only names.
TARGET_FIELDS = ("deployment", "operation", "name", "role")


def _target(request: Request, *, with_body: bool = True) -> str:
    parts = [f"{key}={value}" for key, value in request.path_params.items()]
    if request.url.query:
        parts.append(request.url.query)
    # Only a body FastAPI has read already (a JSON body of an authenticated request): this
    # never reads one itself (an anonymous request's, or an upload streamed by its route).
    raw = getattr(request, "_body", None) if with_body else None
    if raw and request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            parts += [
                f"{key}={str(body[key])[:64]}"
                for key in TARGET_FIELDS
                if isinstance(body.get(key), str)
            ]
    return " ".join(parts)


def _outcome(exc: BaseException) -> str:
    """A failed request's result as the audit log keeps it: its status and the reason the
    API gave, never an input (a 422 names the fields, not their values) nor, for an
    unexpected error, its message (a database error quotes its parameters)."""
    if isinstance(exc, HTTPException):
        return f"{exc.status_code}: {exc.detail}"
    if isinstance(exc, RequestValidationError):
        return f"422: {describe_validation(exc.errors(), with_input=False)}"
    code = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
    return f"{code}: {exc}" if code != 500 else f"500: {type(exc).__name__}"


@dataclass(frozen=True)
class Entry:
    """Who asked for what (an API token, or "anonymous"), to be written to the audit log
    with its result."""

    actor: str
    token_id: int | None
    source: str
    action: str
    target: str

    @classmethod
    def of(cls, request: Request, token: ApiToken | None) -> Entry:
        # An anonymous request's body is never read for its entry.
        return cls(
            token.name if token else "anonymous",
            token.id if token else None,
            client_address(request),
            _action(request),
            _target(request, with_body=token is not None),
        )

    async def write(self, session: AsyncSession, result: str) -> None:
        await audit.append(session, **asdict(self), result=result)


def needs(role: Role, *, unscoped: bool = False) -> dict[str, Any]:
    """What a route declares in its decorator (`@router.get(..., **needs(Role.VIEWER))`):
    the role it requires (and, with `unscoped`, no scope), checked before anything else
    of the request, and shown in the OpenAPI document as `x-iac-role`.

    It also keeps the audit log: every request that may change something (not GET), and
    every refusal of a role, gets an entry, written in the request's own transaction when
    the request succeeds (a failed one is rolled back first: its entry says why)."""

    async def check(
        request: Request, response: Response, token: TokenDep, session: SessionDep
    ) -> AsyncIterator[None]:
        entry = Entry.of(request, token)
        have = role_of(token)
        problem = ""
        if not have.includes(role):
            problem = f"this needs the {role} role; token {token.name!r} is a {have}"
        elif unscoped and not scope_of(token).unscoped:
            problem = (
                f"this needs an unscoped {role} token; token {token.name!r} is limited to "
                f"{scope_of(token).describe()}"
            )
        if problem:
            await entry.write(session, f"403: {problem}")
            await session.commit()
            raise HTTPException(403, problem)
        if request.method in ("GET", "HEAD"):
            yield
            return
        try:
            yield
        except Exception as exc:
            await session.rollback()  # what the request did is undone; its entry is kept
            await entry.write(session, _outcome(exc))
            await session.commit()
            raise
        # The route's own status (one it set on its Response wins), as the client gets it.
        status = response.status_code or getattr(request.scope.get("route"), "status_code", 0)
        status = status or 200
        await entry.write(session, str(status))

    extra = {"x-iac-role": role.value, "x-iac-unscoped": unscoped}
    return {"dependencies": [Depends(check, scope="function")], "openapi_extra": extra}


async def deployment_from_path(
    session: SessionDep, token: TokenDep, name: Annotated[str, Path(description="Deployment name.")]
) -> Deployment:
    """The live deployment named in the path, within the token's scope (else 404)."""
    return await deployments.get_deployment(session, name, scope=scope_of(token))


DeploymentDep = Annotated[Deployment, Depends(deployment_from_path)]

# A run id, config version or state version in a path.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


async def run_from_path(run_id: IdPath, database: DatabaseDep, token: TokenDep) -> int:
    """The run id of the path, if the run exists for the token (its deployment live and
    within the token's scope), else 404. A short transaction of its own, as for the token:
    the log route streams from sessions of its own (one connection at a time on SQLite)."""
    async with database.session() as session:
        await runlist.check_visible(session, run_id, scope_of(token))
    return run_id


RunIdDep = Annotated[int, Depends(run_from_path)]
