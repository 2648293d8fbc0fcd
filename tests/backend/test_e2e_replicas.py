"""Several backend processes on one PostgreSQL: each run is dispatched exactly once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from backend.db import migrate
from tests.backend.conftest import PgServer
from tests.backend.platform import start_backend
from tests.procs import start_runner

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'


def test_two_backends_never_dispatch_a_run_twice(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path
) -> None:
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    runners = [
        start_runner(tmp_path, tool_env, "--max-concurrent", "4", name=f"r{i}") for i in range(2)
    ]
    backends = [start_backend(tmp_path, tool_env, url, name=f"b{i}") for i in range(2)]
    try:
        first = backends[0]
        for i, runner in enumerate(runners):
            first.register(f"r{i}", runner.address)
        for b in backends:
            b.wait_runners_healthy("r0", "r1")
        n = 24
        for i in range(n):
            first.deploy(f"d{i}", {"main.tf": FAST_CONFIG})
        # Queue through both replicas, so both wake up and race for the same rows.
        ids = [backends[i % 2].start(f"d{i}", "plan")["id"] for i in range(n)]
        runs = [first.wait(i, "succeeded", "failed", timeout=240) for i in ids]
        assert all(r["status"] == "succeeded" for r in runs), [
            r for r in runs if r["status"] != "succeeded"
        ]
        dispatchers = []
        for run in runs:
            kinds = [e["kind"] for e in run["events"] if e["kind"] in ("dispatched", "requeued")]
            # A runner that answered "full" before starting gives the run back: a requeue
            # may follow a dispatch, but two dispatches never stand side by side.
            assert kinds == ["dispatched", "requeued"] * (len(kinds) // 2) + ["dispatched"], kinds
            last = [e for e in run["events"] if e["kind"] == "dispatched"][-1]
            dispatchers.append(re.search(r"by backend (\w+)", last["message"]).group(1))  # type: ignore[union-attr]
        assert set(dispatchers) <= {"b0", "b1"}
        # What the runners actually executed: each run's plan step exactly once.
        started = [
            e["run_id"]
            for runner in runners
            for e in runner.log_events()
            if e.get("event") == "run_start" and str(e.get("run_id", "")).endswith("-plan")
        ]
        assert len(set(started)) == len(started) == n, started
    finally:
        for b in backends:
            b.stop()
        for runner in runners:
            runner.stop()
