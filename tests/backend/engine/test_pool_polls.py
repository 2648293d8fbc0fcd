"""How often the pool asks real runner servers: an idle runner whose answer does not change is
asked every `IDLE_EVERY`th pass, yet a runner that is killed is seen unhealthy at the next
pass, because its closed connection shows before any call."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.pool import IDLE_EVERY, RunnerPool
from backend.store import runners
from tests.procs import start_runner

pytestmark = pytest.mark.anyio


async def last_seen(db: Database) -> dict[str, tuple[str, datetime | None]]:
    async with db.session() as s:
        return {r.id: (r.status, r.last_seen) for r in await runners.list_runners(s)}


async def test_idle_runners_are_asked_less_and_a_killed_one_is_seen_at_once(
    app: FastAPI,
    db: Database,
    client: httpx.AsyncClient,
    tmp_path: Path,
    tool_env: dict[str, str],
) -> None:
    await app.state.engine.stop()  # this test's pool is the only one polling
    servers = [start_runner(tmp_path, tool_env, name=n) for n in ("quiet", "doomed")]
    pool = RunnerPool(db, app.state.cipher, poll_interval=3600)  # passes are run by hand
    try:
        for server in servers:
            response = await client.post(
                "/api/v1/runners", json={"name": server.name, "address": server.address}
            )
            assert response.status_code == 201, response.text
        await pool.refresh()
        await pool.refresh()  # the same answer twice: both runners are now idle and unchanged
        settled = await last_seen(db)
        assert {s for s, _ in settled.values()} == {"healthy"}

        # The next passes ask nobody: nothing in the database moves.
        for _ in range(IDLE_EVERY - 1):
            await pool.refresh()
        assert await last_seen(db) == settled

        # A runner killed now: its connection closes, and the next pass asks it.
        servers[1].stop(signal.SIGKILL)
        for _ in range(200):  # the channel sees the closed connection within milliseconds
            if not pool._clients["doomed"][1].connected():
                break
            await asyncio.sleep(0.01)
        await pool.refresh()
        after = await last_seen(db)
        assert after["doomed"][0] == "unhealthy"
        assert after["quiet"] == settled["quiet"], "the quiet one was not asked"
        assert pool.views["doomed"].status == "unhealthy"
        assert pool.views["quiet"].status == "healthy"
    finally:
        await pool.close()
        for server in servers:
            server.stop()
