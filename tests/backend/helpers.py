"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

from backend.db import Database
from backend.models import RunStatus
from backend.store import deployments, runs
from tests.backend.archives import tar_gz


async def new_deployment(
    client: httpx.AsyncClient, name: str = "web", **fields: object
) -> dict[str, Any]:
    response = await client.post("/api/v1/deployments", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def upload(client: httpx.AsyncClient, name: str, data: bytes | None = None) -> httpx.Response:
    return await client.post(
        f"/api/v1/deployments/{name}/config",
        content=tar_gz() if data is None else data,
        headers={"Content-Type": "application/gzip"},
    )


async def start_run(
    db: Database, deployment: str, status: RunStatus = RunStatus.RUNNING, runner: str | None = None
) -> tuple[int, str]:
    """A run of ``deployment`` in ``status`` with state credentials; returns (id, token)."""
    async with db.session() as s:
        dep = await deployments.get_deployment(s, deployment)
        run = await runs.create_run(s, dep, "apply")
        run.status = status.value
        run.runner_id = runner
        token = runs.issue_state_token(run)
        await s.flush()
        return run.id, token


async def snapshot(client: httpx.AsyncClient, *paths: str) -> list[object]:
    """The GET answers of ``paths``: compared before and after a refused request."""
    out: list[object] = []
    for path in paths:
        response = await client.get(path)
        out.append((response.status_code, response.json()))
    return out
