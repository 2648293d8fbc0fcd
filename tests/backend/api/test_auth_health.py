"""API token authentication, and the health / readiness / metrics endpoints."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import utcnow
from backend.store import tokens
from tests.backend.conftest import API_TOKEN

pytestmark = pytest.mark.anyio


async def test_health_ready_and_metrics_need_no_token(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    ready = await anon.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = await anon.get("/metrics")
    assert metrics.status_code == 200
    assert "iac_runs_finished_total" in metrics.text


async def test_readyz_reports_an_unreachable_database(
    anon: httpx.AsyncClient, app: FastAPI
) -> None:
    healthy = app.state.db
    # Nothing listens on port 1: the database "went away".
    app.state.db = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        response = await anon.get("/readyz")
    finally:
        await app.state.db.dispose()
        app.state.db = healthy
    assert response.status_code == 503
    assert "database" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_token_is_401(
    anon: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path in ("/api/v1/runners", "/api/v1/deployments", "/api/v1/deployments/x/state"):
        response = await anon.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "token" in response.json()["detail"]


async def test_bootstrap_token_works(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/runners")).status_code == 200


async def test_expired_and_revoked_tokens_are_refused(
    anon: httpx.AsyncClient, db: Database
) -> None:
    async with db.session() as s:
        _, live = await tokens.create_token(s, "live")
        _, expired = await tokens.create_token(s, "old", expires_at=utcnow() - timedelta(seconds=1))
        revoked_row, revoked = await tokens.create_token(s, "gone")
        await tokens.revoke_token(s, revoked_row.id)

    async def get(token: str) -> httpx.Response:
        return await anon.get("/api/v1/runners", headers={"Authorization": f"Bearer {token}"})

    assert (await get(live)).status_code == 200
    for token in (expired, revoked):
        response = await get(token)
        assert response.status_code == 401
        assert "expired or revoked" in response.json()["detail"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "LOCK", "UNLOCK"])
async def test_the_backend_serves_no_state_over_http(
    client: httpx.AsyncClient, method: str
) -> None:
    """Terraform reaches the state through its runner (ServeState); over HTTP there is
    nothing, with or without an API token."""
    await client.post("/api/v1/deployments", json={"name": "d1"})
    response = await client.request(method, "/api/v1/state/d1", content=b"{}")
    assert response.status_code in (404, 405)


async def test_openapi_lists_the_api(anon: httpx.AsyncClient) -> None:
    spec = (await anon.get("/openapi.json")).json()
    assert "/api/v1/deployments/{name}/config" in spec["paths"]
    assert (await anon.get("/docs")).status_code == 200
