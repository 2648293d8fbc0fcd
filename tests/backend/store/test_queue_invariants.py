"""The dispatcher's invariants as a stateful property test (hypothesis RuleBasedStateMachine).

Several backends' dispatchers (each with its own view of the runners, as separate
processes have) claim runs from one real database: PostgreSQL, and SQLite with one
backend. The runners are simulated at the edge the backend sees: a runner takes a
claimed run while it has a free slot and refuses it as full otherwise (the executor then
undoes the claim, as it does on RESOURCE_EXHAUSTED). Random interleavings of run
creation (with priorities), dispatch passes on any backend, runs ending, plans awaiting
approval, approvals, cancels, runner polls, capacity changes and backend restarts; after
every step the invariants of backend/dispatcher.py are checked against the database and a
model of what the runners executed:

1. no run executes twice at once, and a run's history shows one dispatch per accepted claim;
2. at most one active run per deployment;
3. within a deployment, runs start in the order they were queued;
4. a backend never hands a runner more than the slots it knows free there (and a runner
   refuses what it has no slot for);
5. a queued run that a pass looked at and did not place says why it waits.

IAC_SOAK=1 runs many more and longer examples (`make soak`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from backend.archive import Limits
from backend.db import Database, migrate
from backend.dispatcher import Dispatcher
from backend.models import Base, CancelMode, Run, RunEvent, RunStatus
from backend.pool import RunnerPool, RunnerView
from backend.steps import RUNNER_FEATURES
from backend.store import configs, deployments, queue, run_transitions, runs
from backend.store.queue import Claim
from tests.backend.archives import tar_gz
from tests.backend.conftest import PgServer

SOAK = os.environ.get("IAC_SOAK", "") not in ("", "0")
DEPLOYMENTS = ("a", "b", "c")
RUNNERS = ("r1", "r2")
TOOLS = [{"name": "terraform", "version": "1.11.4"}]
HOLDING = {RunStatus.RUNNING.value, RunStatus.AWAITING_APPROVAL.value, RunStatus.APPLYING.value}


@dataclass
class Executing:
    claim: Claim
    backend: int


@dataclass
class World:
    """What the runners did, as the test saw it."""

    capacity: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUNNERS, 2))
    executing: dict[int, Executing] = field(default_factory=dict)  # run id ->
    started: dict[str, list[int]] = field(default_factory=dict)  # deployment -> plan starts
    accepted: dict[int, int] = field(default_factory=dict)  # run id -> claims accepted
    deployment_of: dict[int, str] = field(default_factory=dict)

    def load(self, runner: str) -> int:
        return sum(1 for e in self.executing.values() if e.claim.runner == runner)


class Backend:
    """One backend's dispatcher and its view of the runner pool."""

    def __init__(self, db: Database, index: int, world: World) -> None:
        self.db = db
        self.index = index
        self.world = world
        self.pool = RunnerPool(db, None)  # type: ignore[arg-type]  # views set by the test
        self.dispatcher = Dispatcher(db, self.pool, f"backend-{index}", self._start)
        self.undoing: list[asyncio.Future[None]] = []
        self.poll()

    def poll(self) -> None:
        """What a poll of every runner would tell this backend now."""
        for name in RUNNERS:
            ours = self.pool._occupancy(name)
            mine = {str(e.claim.run_id) for e in self.world.executing.values()
                    if e.claim.runner == name and e.backend == self.index}  # fmt: skip
            others = {str(run_id) for run_id, e in self.world.executing.items()
                      if e.claim.runner == name} - mine  # fmt: skip
            view = self.pool.views.get(name) or RunnerView(
                name=name, status="healthy", labels={}, tools=TOOLS, ours=ours,
                features=RUNNER_FEATURES,
            )  # fmt: skip
            view.max_concurrent = self.world.capacity[name]
            view.reported = len(others) + len(mine)
            view.reported_runs = frozenset(others | mine)
            ours.steps = set(mine)
            self.pool.views[name] = view

    def _start(self, claim: Claim) -> None:
        view = self.pool.views[claim.runner]
        lease = self.pool.lease(claim.runner, claim.run_id)
        ours = self.pool._occupancy(claim.runner)
        ours.runs[claim.run_id] = str(claim.run_id)
        ours.steps.add(str(claim.run_id))
        # 4. the dispatcher hands a runner no more than the slots it knows free there
        assert view.active <= view.max_concurrent, (view.active, view.max_concurrent)
        world = self.world
        assert claim.run_id not in world.executing, f"run {claim.run_id} claimed twice"
        if world.load(claim.runner) >= world.capacity[claim.runner]:
            # RESOURCE_EXHAUSTED: the executor undoes the claim, concurrently with
            # whatever the dispatchers do meanwhile.
            lease.full()
            self.undoing.append(asyncio.ensure_future(_unclaim(self.db, claim)))
            return
        world.executing[claim.run_id] = Executing(claim, self.index)
        world.accepted[claim.run_id] = world.accepted.get(claim.run_id, 0) + 1
        if claim.phase == "plan":
            world.started.setdefault(world.deployment_of[claim.run_id], []).append(claim.run_id)

    def release(self, claim: Claim) -> None:
        lease = self.pool.lease(claim.runner, claim.run_id)
        lease.release()


class QueueMachine(RuleBasedStateMachine):
    url: str = ""
    backends_count = 3

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url)
        self.call(_empty(self.db))
        self.world = World()
        self.backends = [Backend(self.db, i, self.world) for i in range(self.backends_count)]
        self.looked_at: set[int] = set()
        for name in DEPLOYMENTS:
            self.call(_deploy(self.db, name))

    def call(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.call(self.db.dispose())
        self.loop.close()

    created = Bundle("created")

    @rule(
        target=created,
        deployment=st.sampled_from(DEPLOYMENTS),
        priority=st.integers(0, 3),
        operation=st.sampled_from(["plan", "apply"]),
    )
    def create(self, deployment: str, priority: int, operation: str) -> int:
        run_id = self.call(_create(self.db, deployment, operation, priority))
        self.world.deployment_of[run_id] = deployment
        return int(run_id)

    @rule(backend=st.integers(0, 2))
    def dispatch(self, backend: int) -> None:
        b = self.backends[backend % len(self.backends)]
        waiting_before = self.call(_waiting(self.db))
        self.call(b.dispatcher.dispatch_once())
        self._settle()
        self.looked_at |= waiting_before

    @rule()
    def dispatch_all_at_once(self) -> None:
        """Every backend's pass at the same time, and the claims refused meanwhile undone
        while they run: stale reads meet each other's claims."""
        waiting_before = self.call(_waiting(self.db))

        async def race() -> None:
            await asyncio.gather(*(b.dispatcher.dispatch_once() for b in self.backends))

        self.call(race())
        self._settle()
        self.looked_at |= waiting_before

    def _settle(self) -> None:
        for b in self.backends:
            while b.undoing:
                self.call(b.undoing.pop())

    @precondition(lambda self: self.world.executing)
    @rule(data=st.data(), outcome=st.sampled_from(["succeeded", "failed", "planned"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.world.executing)))
        done = self.world.executing.pop(run_id)
        self.backends[done.backend].release(done.claim)
        self.call(_finish(self.db, done.claim, outcome))

    @rule(run_id=created)
    def approve(self, run_id: int) -> None:
        self.call(_quietly(_approve(self.db, run_id)))

    @rule(run_id=created)
    def cancel(self, run_id: int) -> None:
        if run_id in self.world.executing:
            return  # a cancel of an executing run goes to its runner: it then finishes
        self.call(_quietly(_cancel(self.db, run_id)))

    @rule()
    def poll(self) -> None:
        for b in self.backends:
            b.poll()

    @rule(runner=st.sampled_from(RUNNERS), slots=st.integers(0, 3))
    def resize(self, runner: str, slots: int) -> None:
        self.world.capacity[runner] = slots

    @rule(backend=st.integers(0, 2))
    def restart(self, backend: int) -> None:
        """A backend process restarts: its in-memory views start from a fresh poll (its
        executions go on, as runs do on their runners)."""
        index = backend % len(self.backends)
        self.backends[index] = Backend(self.db, index, self.world)

    # -- the invariants ------------------------------------------------------------------
    @invariant()
    def one_active_run_per_deployment(self) -> None:
        holding = self.call(_holding(self.db))
        assert all(n <= 1 for n in holding.values()), holding

    @invariant()
    def deployments_start_in_queue_order(self) -> None:
        for deployment, started in self.world.started.items():
            assert started == sorted(started), (deployment, started)

    @invariant()
    def one_dispatch_in_the_history_per_accepted_claim(self) -> None:
        dispatched = self.call(_dispatch_counts(self.db))
        for run_id in set(dispatched) | set(self.world.accepted):
            assert dispatched.get(run_id, 0) == self.world.accepted.get(run_id, 0), run_id

    @invariant()
    def a_queued_run_says_why_it_waits(self) -> None:
        for run_id, reason in self.call(_queued_reasons(self.db)).items():
            if run_id in self.looked_at:
                assert reason, f"run {run_id} waits without a reason"


# -- database steps (each its own transaction, as the backend's) ---------------------------
async def _empty(db: Database) -> None:
    async with db.session() as s:
        for table in reversed(Base.metadata.sorted_tables):
            await s.execute(table.delete())


async def _deploy(db: Database, name: str) -> None:
    async with db.session() as s:
        d = await deployments.create_deployment(s, name=name)
        await configs.add_config_version(s, d.name, tar_gz(), Limits(100, 10**7))


async def _create(db: Database, name: str, operation: str, priority: int) -> int:
    async with db.session() as s:
        d = await deployments.get_deployment(s, name)
        return (await runs.create_run(s, d, operation, priority=priority)).id


async def _unclaim(db: Database, claim: Claim) -> None:
    async with db.session() as s:
        assert await queue.unclaim(s, claim, f"runner {claim.runner} refused: full")


async def _finish(db: Database, claim: Claim, outcome: str) -> None:
    async with db.session() as s:
        run = await runs.get_run(s, claim.run_id)
        if outcome == "planned" and run.operation == "apply" and claim.phase == "plan":
            assert await run_transitions.move(
                s,
                claim.run_id,
                RunStatus.AWAITING_APPROVAL,
                among=[RunStatus.RUNNING],
                in_epoch=claim.epoch,
                claimed_by=None,
            )
            return
        status = RunStatus.FAILED if outcome == "failed" else RunStatus.SUCCEEDED
        assert await run_transitions.end(s, claim.run_id, status, in_epoch=claim.epoch)


async def _approve(db: Database, run_id: int) -> None:
    async with db.session() as s:
        await run_transitions.approve(s, run_id, actor="test", plan_ttl=86400)


async def _cancel(db: Database, run_id: int) -> None:
    async with db.session() as s:
        await run_transitions.cancel(s, run_id, CancelMode.GRACEFUL)


async def _quietly(coro: Any) -> None:
    """A refused user action (409: not awaiting approval, already ended) changes nothing."""
    from backend.errors import Conflict

    try:
        await coro
    except Conflict:
        pass


async def _holding(db: Database) -> dict[int, int]:
    async with db.session() as s:
        rows = await s.execute(
            select(Run.deployment_id, func.count())
            .where(Run.status.in_(HOLDING))
            .group_by(Run.deployment_id)
        )
        return {row[0]: int(row[1]) for row in rows}


async def _waiting(db: Database) -> set[int]:
    async with db.session() as s:
        rows = await s.scalars(
            select(Run.id).where(Run.status == RunStatus.QUEUED.value, Run.claimed_by.is_(None))
        )
        return set(rows.all())


async def _queued_reasons(db: Database) -> dict[int, str]:
    async with db.session() as s:
        rows = await s.execute(
            select(Run.id, Run.wait_reason).where(Run.status == RunStatus.QUEUED.value)
        )
        return {row[0]: row[1] for row in rows}


async def _dispatch_counts(db: Database) -> dict[int, int]:
    async with db.session() as s:
        rows = await s.execute(
            select(RunEvent.run_id, func.count())
            .where(RunEvent.kind == "dispatched")
            .group_by(RunEvent.run_id)
        )
        return {row[0]: int(row[1]) for row in rows}


SETTINGS = settings(
    max_examples=60 if SOAK else 8,
    stateful_step_count=80 if SOAK else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.soak
def test_queue_invariants_with_three_backends_on_postgresql(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    machine = type("PgQueue", (QueueMachine,), {"url": url, "backends_count": 3})
    run_state_machine_as_test(machine, settings=SETTINGS)


@pytest.mark.soak
def test_queue_invariants_with_one_backend_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / secrets.token_hex(4) / 'iac.db'}"
    asyncio.run(migrate(url))
    machine = type("SqliteQueue", (QueueMachine,), {"url": url, "backends_count": 1})
    run_state_machine_as_test(machine, settings=SETTINGS)
