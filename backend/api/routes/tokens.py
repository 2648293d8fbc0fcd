"""API tokens: create (the token is shown once, with a role and scope within the creating
token's), list, revoke; and /me, the token making the request.

Only a token's SHA-256 is stored. The token in IAC_API_TOKEN is made valid again on every
start of the backend, so to retire it, change IAC_API_TOKEN first (docs/tokens.md).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from backend.access import Role, Scope
from backend.api.deps import IdPath, SessionDep, TokenDep, needs, role_of, scope_of
from backend.api.routing import CheckedRoute
from backend.errors import Conflict, Forbidden
from backend.models import utcnow
from backend.schemas.tokens import MeOut, TokenCreate, TokenCreated, TokenOut
from backend.store import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"], route_class=CheckedRoute)


@router.get("", **needs(Role.ADMIN))
async def list_tokens(session: SessionDep, caller: TokenDep) -> list[TokenOut]:
    """The tokens within the caller's scope."""
    mine = scope_of(caller)
    rows = await tokens.list_tokens(session)
    return [TokenOut.model_validate(t) for t in rows if scope_of(t).within(mine)]


@router.post("", status_code=status.HTTP_201_CREATED, **needs(Role.ADMIN))
async def create_token(body: TokenCreate, session: SessionDep, caller: TokenDep) -> TokenCreated:
    """A new token with a role and scope within the caller's (it cannot raise itself)."""
    mine = scope_of(caller)
    scope = Scope(tuple(body.scope.names), dict(body.scope.labels)) if body.scope else mine
    if not role_of(caller).includes(Role(body.role)):
        raise Forbidden(
            f"token {caller.name!r} is a {role_of(caller)}: it cannot make a {body.role}"
        )
    if not scope.within(mine):
        raise Forbidden(
            f"the scope asked for ({scope.describe()}) is wider than token {caller.name!r}'s "
            f"({mine.describe()})"
        )
    expires_at = None
    if body.expires_in_days is not None:
        expires_at = utcnow() + timedelta(days=body.expires_in_days)
    if caller.expires_at is not None and (expires_at is None or expires_at > caller.expires_at):
        expires_at = caller.expires_at  # a token never outlives the one that made it
    row, token = await tokens.create_token(
        session, body.name, expires_at=expires_at, role=body.role, scope=scope.out()
    )
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, **needs(Role.ADMIN))
async def revoke_token(token_id: IdPath, session: SessionDep, caller: TokenDep) -> None:
    if token_id == caller.id:
        raise Conflict(
            f"API token {token_id} is the one making this request: revoke it with another token"
        )
    await tokens.revoke_token(session, token_id, within=scope_of(caller))


me_router = APIRouter(tags=["tokens"], route_class=CheckedRoute)


@me_router.get("/me", **needs(Role.VIEWER))
async def me(caller: TokenDep) -> MeOut:
    """The token making the request: its name, role, scope and expiry, and what it may do."""
    role = role_of(caller)
    return MeOut(
        **TokenOut.model_validate(caller).model_dump(),
        may={r.value: role.includes(r) for r in Role},
        scope_text=scope_of(caller).describe(),
    )
