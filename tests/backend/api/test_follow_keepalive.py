"""A quiet follow stream sends SSE comments, so proxies do not cut it."""

from __future__ import annotations

import httpx
import pytest

from backend.logs import follow
from tests.backend.helpers import new_deployment, upload

pytestmark = pytest.mark.anyio


async def test_a_waiting_run_gets_keep_alive_comments(
    live_url: str, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "KEEPALIVE_AFTER", 0.05)
    await new_deployment(client, "quiet")
    assert (await upload(client, "quiet")).status_code == 201
    run = (
        await client.post("/api/v1/runs", json={"deployment": "quiet", "operation": "plan"})
    ).json()
    headers = dict(client.headers)
    async with httpx.AsyncClient(base_url=live_url, headers=headers, timeout=30) as http:
        url = f"/api/v1/runs/{run['id']}/logs"
        async with http.stream("GET", url, params={"follow": "true"}) as response:
            seen = []
            async for line in response.aiter_lines():
                seen.append(line)
                if line == ": keep-alive":
                    break
    # No runner is registered: the run stays queued, the stream says so, then keeps alive.
    assert 'data: {"status": "queued"}' in seen
    assert seen[-1] == ": keep-alive"
