"""API tokens: creation, the start-up bootstrap token, and bearer-token authentication.

Only a token's sha256 is stored; a presented token is hashed and looked up, then compared
with ``hmac.compare_digest`` so the comparison itself leaks no timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.access import Scope
from backend.errors import Invalid, NotFound
from backend.models import ApiToken, utcnow

MIN_TOKEN_LENGTH = 16


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def create_token(
    session: AsyncSession,
    name: str,
    *,
    token: str | None = None,
    expires_at: datetime | None = None,
    role: str = "admin",
    scope: dict[str, Any] | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token (random unless given); returns the row and the plaintext token."""
    token = token if token is not None else new_token()
    if len(token) < MIN_TOKEN_LENGTH:
        raise Invalid(f"an API token must be at least {MIN_TOKEN_LENGTH} characters long")
    row = ApiToken(
        name=name, token_hash=hash_token(token), expires_at=expires_at, role=role, scope=scope
    )
    session.add(row)
    await session.flush()
    return row, token


async def ensure_token(session: AsyncSession, name: str, token: str) -> ApiToken:
    """Make sure ``token`` is a valid token (used for IAC_API_TOKEN on every start)."""
    existing = await session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token))
    )
    if existing is not None:
        # The operator set this token in the environment again: it is meant to work, as
        # the unscoped admin it always is.
        existing.revoked = False
        existing.expires_at = None
        existing.role = "admin"
        existing.scope = None
        return existing
    row, _ = await create_token(session, name, token=token)
    return row


async def authenticate(session: AsyncSession, token: str) -> ApiToken | None:
    """The live (not revoked, not expired) token matching ``token``, else None."""
    digest = hash_token(token)
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked or (row.expires_at is not None and row.expires_at <= utcnow()):
        return None
    return row


async def list_tokens(session: AsyncSession) -> Sequence[ApiToken]:
    return (await session.scalars(select(ApiToken).order_by(ApiToken.id))).all()


async def revoke_token(
    session: AsyncSession, token_id: int, *, within: Scope | None = None
) -> None:
    """Revoke the token (only one whose scope is `within` the caller's: others do not
    exist for it)."""
    row = await session.get(ApiToken, token_id)
    if row is None or (within is not None and not Scope.of(row.scope).within(within)):
        raise NotFound(f"API token {token_id} does not exist")
    row.revoked = True
