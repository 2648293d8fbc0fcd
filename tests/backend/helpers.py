"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

from backend.db import Database
from backend.models import RunStatus, utcnow
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
    db: Database,
    deployment: str,
    status: RunStatus = RunStatus.RUNNING,
    runner: str | None = None,
    *,
    backend_id: str | None = None,
) -> tuple[int, str]:
    """A run of ``deployment`` in ``status``, executing on ``runner`` for backend
    ``backend_id`` (with a fresh heartbeat: the app's own engine leaves it alone); returns
    (run id, the runner-side id of its current step)."""
    async with db.session() as s:
        dep = await deployments.get_deployment(s, deployment)
        run = await runs.create_run(s, dep, "apply")
        run.status = status.value
        run.runner_id = runner
        run.claimed_by = backend_id
        run.heartbeat_at = utcnow()
        await s.flush()
        run.runner_run_id = f"btest-r{run.id}-apply-1-apply"
        await s.flush()
        return run.id, run.runner_run_id


async def snapshot(client: httpx.AsyncClient, *paths: str) -> list[object]:
    """The GET answers of ``paths``: compared before and after a refused request."""
    out: list[object] = []
    for path in paths:
        response = await client.get(path)
        out.append((response.status_code, response.json()))
    return out
