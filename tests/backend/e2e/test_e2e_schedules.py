"""Two backend processes on one PostgreSQL, each with its scheduler passing every 0.2 s, and
schedules made due through the database: each due time queues exactly one run, which is
dispatched to a real runner and ends.

Besides the deployments whose runs execute, one deployment no runner can take holds many
schedules: their runs stay queued (and are canceled between rounds), and so many due at
once keep both backends' passes busy with the same schedules at the same moment."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from backend.db import migrate
from tests.backend.conftest import PgServer
from tests.backend.platform import Backend, start_backend
from tests.conftest import wait_for
from tests.procs import start_runner

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'
DEPLOYMENTS = 3
ROUNDS = 2
PARKED = 30  # schedules of the deployment no runner takes


async def make_due(url: str) -> None:
    """Every schedule due an hour ago, as if every backend had been down since then."""
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=5)
    try:
        await conn.execute("UPDATE schedules SET next_run_at = now() - interval '1 hour'")
    finally:
        await conn.close()


def scheduled_runs(backend: Backend, deployment: str, schedule_id: int) -> list[dict[str, Any]]:
    runs = backend.call("GET", "/runs", 200, params={"deployment": deployment})
    return [r for r in runs if r["created_by"] == f"schedule {schedule_id}"]


def queued_all(backend: Backend, schedules: dict[str, int], count: int) -> bool:
    """Whether every schedule has queued `count` runs, and the parked ones their share."""
    enough = all(len(scheduled_runs(backend, n, s)) >= count for n, s in schedules.items())
    return enough and len(parked_runs(backend)) >= PARKED * count


def parked_runs(backend: Backend) -> list[dict[str, Any]]:
    return list(backend.call("GET", "/runs", 200, params={"deployment": "parked", "limit": 1000}))


def test_two_backend_processes_queue_one_run_per_due_time(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path
) -> None:
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    runner = start_runner(tmp_path, tool_env, "--max-concurrent", "4", name="r0")
    backends = [
        start_backend(tmp_path, tool_env, url, name=f"b{i}", IAC_SCHEDULE_INTERVAL="0.2")
        for i in range(2)
    ]
    try:
        first = backends[0]
        first.register("r0", runner.address)
        for b in backends:
            b.wait_runners_healthy("r0")
        schedules: dict[str, int] = {}
        for i in range(DEPLOYMENTS):
            name = f"nightly-{i}"
            first.deploy(name, {"main.tf": FAST_CONFIG})
            # Once a year: only the database makes it due during the test.
            body = {"cron": "0 0 1 1 *", "kind": "plan", "timezone": "Europe/Paris"}
            made = backends[i % 2].call("POST", f"/deployments/{name}/schedules", 201, json=body)
            schedules[name] = made["id"]
        parked: dict[str, int] = {}
        first.deploy("parked", {"main.tf": FAST_CONFIG}, required_labels={"pool": "none"})
        for n in range(PARKED):
            body = {"cron": f"{n} 0 1 1 *", "kind": "plan"}
            made = backends[n % 2].call("POST", "/deployments/parked/schedules", 201, json=body)
            parked[f"parked-{n}"] = made["id"]
        for round_ in range(1, ROUNDS + 1):
            asyncio.run(make_due(url))
            wait_for(partial(queued_all, first, schedules, round_), 60)
            for name, sid in schedules.items():
                runs = scheduled_runs(first, name, sid)
                assert len(runs) == round_, runs
                done = first.wait(runs[0]["id"], "succeeded", "failed", timeout=120)
                assert (done["status"], done["operation"]) == ("succeeded", "plan"), done
                shown = first.call("GET", f"/deployments/{name}/schedules/{sid}", 200)
                # A second claim of the due time would have been a skip while the run was
                # queued, or a second run after: neither.
                assert shown["last_skipped"] == "" and shown["last_run_id"] == runs[0]["id"]
                assert shown["next_run_at"] > done["ended_at"]  # next year's, not a missed one
            waiting = parked_runs(first)
            assert sorted(r["created_by"] for r in waiting if r["status"] == "queued") == sorted(
                f"schedule {sid}" for sid in parked.values()
            )
            for shown in first.call("GET", "/deployments/parked/schedules", 200):
                assert shown["last_skipped"] == "", shown
            for run in waiting:
                if run["status"] == "queued":
                    first.call("POST", f"/runs/{run['id']}/cancel", 200)
        # Both backends kept passing all along, and no run came late.
        for name, sid in schedules.items():
            assert len(scheduled_runs(backends[1], name, sid)) == ROUNDS
        assert len(parked_runs(backends[1])) == PARKED * ROUNDS
        audit = first.call("GET", "/audit", 200, params={"action": "schedule run", "limit": 1000})
        assert len(audit) == (DEPLOYMENTS + PARKED) * ROUNDS
        assert all(a["result"].startswith("queued run ") for a in audit), audit
    finally:
        for b in backends:
            b.stop()
        runner.stop()
