"""The dispatcher's invariants, on SQLite and PostgreSQL, with no runner: runner views are
set by hand (a runner that is there, with so many slots), claims are read from the
database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from backend.db import Database
from backend.dispatcher import FULL_PASS_ROWS, PASS_ROWS, Dispatcher
from backend.models import RunStatus
from backend.pool import RunnerPool, RunnerView
from backend.steps import RUNNER_FEATURES
from backend.store import queue, run_transitions, runs
from backend.store.queue import Claim
from tests.backend.helpers import new_deployment, upload

pytestmark = pytest.mark.anyio
TOOLS = [{"name": "terraform", "version": "1.11.4"}]


def runner(pool: RunnerPool, name: str, slots: int, **labels: str) -> RunnerView:
    view = RunnerView(
        name=name,
        status="healthy",
        labels=labels,
        max_concurrent=slots,
        tools=TOOLS,
        ours=pool._occupancy(name),
        features=RUNNER_FEATURES,
    )
    pool.views[name] = view
    return view


class Harness:
    """A dispatcher whose claims start nothing: they are collected."""

    def __init__(self, db: Database, backend_id: str = "d1") -> None:
        self.db = db
        self.pool = RunnerPool(db, None)  # type: ignore[arg-type]  # no runner is polled
        self.claims: list[Claim] = []
        self.dispatcher = Dispatcher(db, self.pool, backend_id, self._start)

    def _start(self, claim: Claim) -> None:
        self.claims.append(claim)
        self.pool.lease(claim.runner, claim.run_id)

    async def run(self, run_id: int) -> Any:
        async with self.db.session() as s:
            return await runs.get_run(s, run_id)


@pytest.fixture
async def harness(app: FastAPI, db: Database) -> Harness:
    await app.state.engine.stop()  # this test is the only dispatcher
    return Harness(db)


async def queued(client: httpx.AsyncClient, deployment: str, **fields: Any) -> int:
    response = await client.post(
        "/api/v1/runs", json={"deployment": deployment, "operation": "plan", **fields}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def deploy(client: httpx.AsyncClient, name: str, **fields: Any) -> None:
    await new_deployment(client, name, **fields)
    assert (await upload(client, name)).status_code == 201


async def test_a_run_no_runner_can_take_waits_with_the_reason(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    await deploy(client, "web", required_labels={"provider": "aws"})
    run_id = await queued(client, "web")
    assert await harness.dispatcher.dispatch_once() == 0
    assert (
        "no registered runner has the labels provider=aws"
        in (await harness.run(run_id)).wait_reason
    )
    runner(harness.pool, "r1", 2, provider="aws")
    assert await harness.dispatcher.dispatch_once() == 1
    run = await harness.run(run_id)
    assert run.status == "running" and run.runner_id == "r1" and run.wait_reason == ""
    assert run.epoch == 1 and harness.claims[0].epoch == 1


async def test_one_run_per_deployment_in_queue_order_and_priority_across(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    await deploy(client, "a")
    await deploy(client, "b")
    a1 = await queued(client, "a", priority=0)
    a2 = await queued(client, "a", priority=9)  # newer: never before a1, whatever priority
    b1 = await queued(client, "b", priority=5)
    runner(harness.pool, "r1", 10)
    assert await harness.dispatcher.dispatch_once() == 2
    assert [c.run_id for c in harness.claims] == [b1, a1]  # priority, then age
    assert (await harness.run(a2)).wait_reason == (
        f"waiting for run {a1} (queued before it) of this deployment"
    )
    assert await harness.dispatcher.dispatch_once() == 0
    waiting = await harness.run(a2)
    assert waiting.status == "queued"
    assert waiting.wait_reason == f"waiting for run {a1} (running) of this deployment"


async def test_a_refused_run_keeps_its_place_and_its_history(
    client: httpx.AsyncClient, harness: Harness, db: Database
) -> None:
    """The runner said full: the claim is undone (no dispatch in the history), the run is
    still the first of its deployment, and the next pass does not claim the run behind it."""
    await deploy(client, "a")
    first = await queued(client, "a")
    second = await queued(client, "a")
    view = runner(harness.pool, "r1", 2)
    assert await harness.dispatcher.dispatch_once() == 1
    claim = harness.claims.pop()
    lease = harness.pool.lease(claim.runner, claim.run_id)
    lease.full()  # what the executor does when the first Execute is refused
    async with db.session() as s:
        assert await queue.unclaim(s, claim, "runner r1 refused: RESOURCE_EXHAUSTED")
    run = await harness.run(first)
    assert run.status == "queued" and run.claimed_by is None and run.epoch == 1
    async with db.session() as s:
        kinds = [e.kind for e in await runs.list_events(s, first)]
    assert kinds == ["queued"], "no dispatch, no requeue in its history"
    assert view.free == 0, "backed off until the runner's load changes"
    assert await harness.dispatcher.dispatch_once() == 0
    assert (await harness.run(second)).wait_reason == (
        f"waiting for run {first} (queued before it) of this deployment"
    )
    # The runner's report changes: the first run goes, then (after it) the second.
    view.reported, view.reported_runs = 1, frozenset({"elsewhere"})
    assert await harness.dispatcher.dispatch_once() == 1
    assert harness.claims[-1].run_id == first and harness.claims[-1].epoch == 2


async def test_a_claim_rechecks_what_the_pass_read(
    client: httpx.AsyncClient, harness: Harness, db: Database
) -> None:
    """Claims made from a stale view (another backend moved first) are refused."""
    await deploy(client, "a")
    older = await queued(client, "a")
    newer = await queued(client, "a")
    async with db.session() as s:
        # The newer run is not first in its deployment's queue.
        assert await queue.claim(s, newer, "queued", "r1", "1.11.4", "x", row_locks=False) is None
        got = await queue.claim(s, older, "queued", "r1", "1.11.4", "x", row_locks=False)
        assert got is not None
    async with db.session() as s:
        # Taken already; and a run read in another status.
        assert await queue.claim(s, older, "queued", "r1", "1.11.4", "y", row_locks=False) is None
        assert await queue.claim(s, newer, "queued", "r1", "1.11.4", "y", row_locks=False) is None


async def test_every_status_change_goes_through_the_table(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Every (from, to) pair of statuses: a change the table allows happens, any other
    leaves the run as it was."""
    await deploy(client, "t")
    run_id = await queued(client, "t")
    checked = 0
    for frm in RunStatus:
        for to in RunStatus:
            async with db.session() as s:
                (await runs.get_run(s, run_id)).status = frm.value
            allowed = to in run_transitions.TRANSITIONS[frm]
            async with db.session() as s:
                moved = await run_transitions.move(s, run_id, to)
            assert moved == allowed, (frm, to)
            assert (await Harness(db).run(run_id)).status == (to if allowed else frm).value
            checked += 1
    assert checked == len(RunStatus) ** 2


async def test_a_runner_too_old_for_the_plan_review_gets_no_run(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    """An iac-runner-server without stdout_file and verify_sha256 would drop those fields
    silently (the plan's JSON in the log, the plan's digest unchecked): it gets nothing,
    and the run says why."""
    old = runner(harness.pool, "old", 4)
    old.features = frozenset()
    await new_deployment(client, "web")
    await upload(client, "web")
    created = await client.post("/api/v1/runs", json={"deployment": "web", "operation": "plan"})
    await harness.dispatcher.dispatch_once()
    assert harness.claims == []
    run = await harness.run(created.json()["id"])
    assert (
        "runs a recent enough iac-runner-server "
        "(old: without stdout_file, typed_outcome, verify_sha256)" in run.wait_reason
    )


async def copies(db: Database, run_id: int, n: int) -> None:
    """`n` more queued runs like `run_id` (its deployment and configuration), at once."""
    async with db.session() as s:
        row = (await s.execute(select(queue.RUNS).where(queue.R.id == run_id))).mappings().one()
        await s.execute(insert(queue.RUNS), [{k: v for k, v in row.items() if k != "id"}] * n)


async def full_passes_until(
    harness: Harness, done: Callable[[], Awaitable[bool]], most: int
) -> None:
    for _ in range(most):
        harness.dispatcher._last_full_pass = 0.0  # a full pass, whatever the clock says
        await harness.dispatcher.dispatch_once()
        if await done():
            return
    raise AssertionError(f"not done after {most} full passes")


async def test_a_run_that_can_start_is_not_kept_waiting_by_a_deep_queue(
    client: httpx.AsyncClient, harness: Harness, db: Database
) -> None:
    """More runs than a pass reads wait for a pool that is not there (in one deployment
    and in another): the full passes look at each of them in turn; a new run for a runner
    that is there starts on the next pass; a run that could not start before but can now
    starts within the passes that read the whole queue once."""
    deep = FULL_PASS_ROWS + PASS_ROWS + 1
    for name in ("aws-a", "aws-b"):
        await deploy(client, name, required_labels={"provider": "aws"})
        await copies(db, await queued(client, name), deep // 2)
    await deploy(client, "gcp", required_labels={"provider": "gcp"})
    late = await queued(client, "gcp")  # behind the deep queue
    rounds = deep // FULL_PASS_ROWS + 1

    async def all_say_why() -> bool:
        async with db.session() as s:
            silent = select(func.count()).where(
                queue.R.status == "queued", queue.R.wait_reason == ""
            )
            return await s.scalar(silent) == 0

    await full_passes_until(harness, all_say_why, rounds)
    assert (
        "no registered runner has the labels provider=gcp" in (await harness.run(late)).wait_reason
    )

    runner(harness.pool, "any", 4)
    await deploy(client, "plain")
    probe = await queued(client, "plain")
    assert await harness.dispatcher.dispatch_once() == 1
    assert [c.run_id for c in harness.claims] == [probe]

    runner(harness.pool, "gcp", 4, provider="gcp")

    async def started() -> bool:
        return any(c.run_id == late for c in harness.claims)

    await full_passes_until(harness, started, rounds + 1)
