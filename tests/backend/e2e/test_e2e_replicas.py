"""Several backend processes on one PostgreSQL: each run is dispatched exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import pytest

from backend.db import migrate
from tests.backend.conftest import PgServer
from tests.backend.platform import start_backend
from tests.conftest import wait_for
from tests.procs import start_runner
from tests.reliability.harness import lines_config, tagged

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'


@pytest.mark.slow  # test_three_backends_keep_each_deployments_queue_order checks it too
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


def test_failover_mid_apply_keeps_the_apply_state(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """Two backends on one PostgreSQL, one runner. The backend executing an apply is
    SIGKILLed at its 8th line and stays down: the other adopts the run, terraform's state
    calls (held by the runner meanwhile) go to the adopter, and the apply's state is stored
    with the new resource in it. Every line of the log once."""
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    runner = start_runner(tmp_path, tool_env, name="r0")
    backends = {
        name: start_backend(tmp_path, tool_env, url, name=name, IAC_ORPHAN_AFTER="6")
        for name in ("b0", "b1")
    }
    try:
        backends["b0"].register("r0", runner.address)
        for b in backends.values():
            b.wait_runners_healthy("r0")
        n = 20
        config = lines_config("fo", n, "0.3") + 'output "made" {\n  value = "yes"\n}\n'
        backends["b0"].deploy("fo", {"main.tf": config})
        run = backends["b0"].start("fo", "apply", auto_approve=True)
        wait_for(
            lambda: 8 in tagged(backends["b0"].log_text(run["id"]).splitlines(), "fo"),
            timeout=120,
        )
        executing = backends["b0"].run(run["id"])
        assert executing["status"] == "applying", executing
        last = [e for e in executing["events"] if e["kind"] in ("dispatched", "adopted")][-1]
        victim = re.search(r"backend (b\d)", last["message"]).group(1)  # type: ignore[union-attr]
        survivor = backends["b1" if victim == "b0" else "b0"]
        backends.pop(victim).stop(signal.SIGKILL)

        done = survivor.wait(run["id"], "succeeded", "failed", timeout=120)
        assert done["status"] == "succeeded", done
        assert "adopted" in [e["kind"] for e in done["events"]]
        assert tagged(survivor.log_text(run["id"]).splitlines(), "fo") == list(range(1, n + 1))
        versions = survivor.call("GET", "/deployments/fo/state", 200)["versions"]
        assert versions and versions[0]["run_id"] == run["id"] and not versions[0]["recovered"]
        latest = survivor.client.get(f"/deployments/fo/state/versions/{versions[0]['id']}")
        state = json.loads(latest.content)
        assert [r["name"] for r in state["resources"]] == ["lines"]
        assert state["outputs"]["made"]["value"] == "yes"
        assert survivor.call("GET", "/deployments/fo/state", 200)["lock"] is None
    finally:
        for b in backends.values():
            b.stop()
        runner.stop()


def test_a_paused_backend_that_lost_its_run_writes_nothing_more(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """The backend executing an apply is paused (SIGSTOP) until the other adopts the run,
    then resumed: it finds its claim gone (the epoch moved on) and stops streaming. The log
    holds every line once, in chunks that follow each other with no overlap."""
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    runner = start_runner(tmp_path, tool_env, name="r0")
    backends = {
        name: start_backend(tmp_path, tool_env, url, name=name, IAC_ORPHAN_AFTER="6")
        for name in ("b0", "b1")
    }
    paused = None
    try:
        backends["b0"].register("r0", runner.address)
        for b in backends.values():
            b.wait_runners_healthy("r0")
        n = 30
        backends["b0"].deploy("fence", {"main.tf": lines_config("fence", n, "0.3")})
        run = backends["b0"].start("fence", "apply", auto_approve=True)
        wait_for(
            lambda: 5 in tagged(backends["b0"].log_text(run["id"]).splitlines(), "fence"),
            timeout=120,
        )
        last = [e for e in backends["b0"].run(run["id"])["events"] if e["kind"] == "dispatched"]
        victim = re.search(r"backend (b\d)", last[-1]["message"]).group(1)  # type: ignore[union-attr]
        other = backends["b1" if victim == "b0" else "b0"]
        paused = backends[victim]
        paused.proc.send_signal(signal.SIGSTOP)
        wait_for(
            lambda: "adopted" in [e["kind"] for e in other.run(run["id"])["events"]], timeout=60
        )
        paused.proc.send_signal(signal.SIGCONT)
        done = other.wait(run["id"], "succeeded", "failed", timeout=120)
        assert done["status"] == "succeeded", done
        assert tagged(other.log_text(run["id"]).splitlines(), "fence") == list(range(1, n + 1))
        chunks = asyncio.run(_chunk_ranges(url, run["id"]))
        for (_, last_seq), (first_seq, _) in zip(chunks, chunks[1:], strict=False):
            assert first_seq == last_seq + 1, chunks
        wait_for(lambda: "taken over by another backend" in paused.log.read_text(), timeout=60)
    finally:
        if paused is not None:
            paused.proc.send_signal(signal.SIGCONT)
        for b in backends.values():
            b.stop()
        runner.stop()


async def _chunk_ranges(url: str, run_id: int) -> list[tuple[int, int]]:
    from sqlalchemy import select

    from backend.db import Database
    from backend.models import LogChunk

    db = Database(url)
    try:
        async with db.session() as session:
            rows = await session.execute(
                select(LogChunk.first_seq, LogChunk.last_seq)
                .where(LogChunk.run_id == run_id)
                .order_by(LogChunk.first_seq)
            )
            return [(r.first_seq, r.last_seq) for r in rows]
    finally:
        await db.dispose()


@pytest.mark.soak
def test_three_backends_keep_each_deployments_queue_order(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """Three backends on one PostgreSQL, runners with few slots (so they refuse as full
    when backends' views are stale), runs of several deployments queued round-robin
    through all three: each run executes once, each deployment's runs start in the order
    they were queued, and no history shows a requeue. IAC_SOAK=1: the issue's size."""
    soak = os.environ.get("IAC_SOAK", "") not in ("", "0")
    deployments, per = (60, 10) if soak else (6, 3)
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    runners = [
        start_runner(tmp_path, tool_env, "--max-concurrent", "4" if soak else "2", name=f"r{i}")
        for i in range(4 if soak else 2)
    ]
    backends = [start_backend(tmp_path, tool_env, url, name=f"b{i}") for i in range(3)]
    try:
        for i, runner in enumerate(runners):
            backends[0].register(f"r{i}", runner.address)
        for b in backends:
            b.wait_runners_healthy(*(f"r{i}" for i in range(len(runners))))
        for d in range(deployments):
            backends[0].deploy(f"d{d}", {"main.tf": FAST_CONFIG})
        ids: dict[str, list[int]] = {}
        for n in range(per):
            for d in range(deployments):
                run = backends[(n * deployments + d) % 3].start(f"d{d}", "plan")
                ids.setdefault(f"d{d}", []).append(run["id"])
        all_ids = [i for group in ids.values() for i in group]
        done = {i: backends[0].wait(i, "succeeded", "failed", timeout=600) for i in all_ids}
        assert all(r["status"] == "succeeded" for r in done.values()), [
            r for r in done.values() if r["status"] != "succeeded"
        ]
        out_of_order = 0
        for group in ids.values():
            starts = sorted(group, key=lambda i: done[i]["started_at"])
            out_of_order += sum(1 for a, b in zip(starts, starts[1:], strict=False) if a > b)
        assert out_of_order == 0, {
            d: [(i, done[i]["started_at"]) for i in g] for d, g in ids.items()
        }
        requeues = [i for i, r in done.items() if any(e["kind"] == "requeued" for e in r["events"])]
        assert requeues == []
        # The runners' own logs: each run's plan step ran once, and on each runner the runs
        # of one deployment came in queue order.
        plans = [
            str(e["run_id"])
            for runner in runners
            for e in runner.log_events()
            if e.get("event") == "run_start" and str(e.get("run_id", "")).endswith("-plan")
        ]
        assert len(plans) == len(set(plans)) == len(all_ids), len(plans)
        deployment_of = {i: d for d, group in ids.items() for i in group}
        for runner in runners:
            seen: dict[str, int] = {}
            for e in runner.log_events():
                match = re.search(r"-r(\d+)-plan-", str(e.get("run_id", "")))
                if e.get("event") != "run_start" or match is None:
                    continue
                run_id = int(match.group(1))
                dep = deployment_of[run_id]
                assert run_id >= seen.get(dep, 0), (runner.name, dep, run_id, seen)
                seen[dep] = run_id
    finally:
        for b in backends:
            b.stop()
        for runner in runners:
            runner.stop()
