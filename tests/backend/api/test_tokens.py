"""The API tokens endpoints: create (shown once), list, revoke; what a revoked token gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from backend.db import Database
from backend.models import ApiToken
from backend.store.tokens import hash_token
from tests.backend.conftest import API_TOKEN
from tests.backend.helpers import snapshot

pytestmark = pytest.mark.anyio


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_create_list_use_and_revoke(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, db: Database
) -> None:
    created = await client.post("/api/v1/tokens", json={"name": "ci", "expires_in_days": 30})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert len(token) >= 32 and body["name"] == "ci" and body["revoked"] is False
    expires = datetime.fromisoformat(body["expires_at"]).replace(tzinfo=UTC)
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)

    # Only the hash is stored; the list never shows a token.
    async with db.session() as s:
        row = await s.get(ApiToken, body["id"])
        assert row is not None and row.token_hash == hash_token(token)
    listed = (await client.get("/api/v1/tokens")).json()
    assert len(listed) == 2 and listed[1]["name"] == "ci"  # after the IAC_API_TOKEN one
    assert all("token" not in t and "token_hash" not in t for t in listed)

    assert (await anon.get("/api/v1/runners", headers=bearer(token))).status_code == 200
    assert (await client.delete(f"/api/v1/tokens/{body['id']}")).status_code == 204
    refused = await anon.get("/api/v1/runners", headers=bearer(token))
    assert refused.status_code == 401
    assert "expired or revoked" in refused.json()["detail"]
    listed = {t["id"]: t for t in (await client.get("/api/v1/tokens")).json()}
    assert listed[body["id"]]["revoked"] is True
    # Revoking again changes nothing and says so with the same answer.
    assert (await client.delete(f"/api/v1/tokens/{body['id']}")).status_code == 204


async def test_a_new_token_revokes_the_first(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """The rotation of docs/tokens.md: make a new token, revoke the old one with it."""
    new = (await client.post("/api/v1/tokens", json={"name": "next", "role": "admin"})).json()
    assert new["expires_at"] is None
    first = next(t for t in (await client.get("/api/v1/tokens")).json() if t["id"] != new["id"])
    revoke = await anon.delete(f"/api/v1/tokens/{first['id']}", headers=bearer(new["token"]))
    assert revoke.status_code == 204, revoke.text
    assert (await client.get("/api/v1/tokens")).status_code == 401
    assert (await anon.get("/api/v1/tokens", headers=bearer(new["token"]))).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/api/v1/tokens", {}, 422, "name"),
        ("POST", "/api/v1/tokens", {"name": ""}, 422, "name"),
        ("POST", "/api/v1/tokens", {"name": "x" * 129}, 422, "name"),
        ("POST", "/api/v1/tokens", {"name": "x", "expires_in_days": 0}, 422, "expires_in_days"),
        ("POST", "/api/v1/tokens", {"name": "x", "token": "chosen-by-me-123"}, 422, "token"),
        ("DELETE", "/api/v1/tokens/999", None, 404, "API token 999 does not exist"),
        ("DELETE", "/api/v1/tokens/0", None, 422, "token_id"),
        ("DELETE", "/api/v1/tokens/{own}", None, 409, "the one making this request"),
    ],
)
async def test_bad_requests_change_nothing(
    client: httpx.AsyncClient,
    db: Database,
    method: str,
    path: str,
    body: dict[str, object] | None,
    status: int,
    fragment: str,
) -> None:
    async with db.session() as s:
        own = await s.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == hash_token(API_TOKEN))
        )
    before = await snapshot(client, "/api/v1/tokens")
    response = await client.request(method, path.format(own=own), json=body)
    assert response.status_code == status, response.text
    assert fragment in response.text
    assert await snapshot(client, "/api/v1/tokens") == before
