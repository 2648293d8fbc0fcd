"""API tokens: create (the token is shown once), list, revoke.

Only a token's SHA-256 is stored. The token in IAC_API_TOKEN is made valid again on every
start of the backend, so to retire it, change IAC_API_TOKEN first (docs/tokens.md).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from backend.api.deps import IdPath, SessionDep, TokenDep
from backend.api.routing import CheckedRoute
from backend.errors import Conflict
from backend.models import utcnow
from backend.schemas import TokenCreate, TokenCreated, TokenOut
from backend.store import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"], route_class=CheckedRoute)


@router.get("")
async def list_tokens(session: SessionDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in await tokens.list_tokens(session)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenCreate, session: SessionDep) -> TokenCreated:
    expires_at = None
    if body.expires_in_days is not None:
        expires_at = utcnow() + timedelta(days=body.expires_in_days)
    row, token = await tokens.create_token(session, body.name, expires_at=expires_at)
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(token_id: IdPath, session: SessionDep, caller: TokenDep) -> None:
    if token_id == caller.id:
        raise Conflict(
            f"API token {token_id} is the one making this request: revoke it with another token"
        )
    await tokens.revoke_token(session, token_id)
