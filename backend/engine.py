"""The run engine, as the API sees it: start and stop it, wake it, approve and cancel runs.

A run moves through phases, each dispatched to a runner picked at that moment:

    queued -> running (plan phase: init + plan -out=tfplan on one runner, tfplan collected)
           -> succeeded                       (operation plan, or nothing to change)
           -> awaiting_approval -> applying   (apply/destroy; an approval policy may skip the wait)
    applying (apply phase: init + apply tfplan on any fitting runner) -> succeeded
    any executing phase -> failed | canceled | timed_out

The parts, each in its module: `dispatcher` (which waiting run goes where, and its
invariants), `executor` (one execution of a phase), `recovery` (adoption, heartbeats,
cancel delivery), `state_service` + `state_channels` (terraform's state, relayed by the
runners), `logs` (the writer, the live hub, following). Every status change goes through
`store.run_transitions`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from functools import partial

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backend.crypto import Cipher
from backend.db import Database
from backend.dispatcher import Dispatcher
from backend.executor import Execution, Executor
from backend.logs.hub import LogHub
from backend.models import BackendSetting, CancelMode
from backend.pool import RunnerPool
from backend.recovery import Recovery
from backend.runner_ids import StepId
from backend.state_channels import StateChannels
from backend.state_service import StateService
from backend.store import run_transitions
from backend.store.executions import Orphan
from backend.store.queue import Claim

log = logging.getLogger("iac.backend.engine")


@dataclass(frozen=True)
class EngineOptions:
    backend_id: str
    max_state_bytes: int
    timeouts: dict[str, int]
    orphan_after: float = 10.0  # a run whose executor's heartbeat is older is adopted
    runner_lost_timeout: float = 15.0  # how long to retry reaching a runner mid-run
    dispatch_interval: float = 1.0
    plan_ttl: float = 86400.0  # an older plan is not applied


class Engine:
    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        pool: RunnerPool,
        hub: LogHub,
        options: EngineOptions,
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.pool = pool
        self.hub = hub
        self.options = options
        self.executions: dict[int, Execution] = {}
        self._prefix = ""  # of runner-side run ids: this database's, the same for replicas
        self._background: list[asyncio.Task[None]] = []
        self.executor = Executor(
            db,
            cipher,
            hub,
            pool.client_for,
            backend_id=options.backend_id,
            prefix=lambda: self._prefix,
            timeouts=options.timeouts,
            runner_lost_timeout=options.runner_lost_timeout,
        )
        self.dispatcher = Dispatcher(
            db, pool, options.backend_id, self._claimed, options.dispatch_interval
        )
        self.recovery = Recovery(
            db,
            options.backend_id,
            self.executions,
            self._adopted,
            self.executor.signal_cancel,
            orphan_after=options.orphan_after,
        )
        self.state_service = StateService(
            db, cipher, options.backend_id, options.max_state_bytes, self.run_of
        )
        self.state_channels = StateChannels(
            options.backend_id, lambda runner: partial(self.state_service.handle, runner)
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._prefix = await self._load_prefix()
        self.pool.on_clients = self.state_channels.sync
        await self.pool.refresh()
        await self.recovery.adopt_orphans()
        self._background = [
            asyncio.create_task(self.pool.run(), name="pool"),
            asyncio.create_task(self.dispatcher.run(), name="dispatch"),
            asyncio.create_task(self.recovery.run(), name="maintenance"),
        ]

    async def stop(self) -> None:
        """Stop watching runs; they go on, on their runners, and are re-attached later."""
        tasks = self._background + [e.task for e in self.executions.values() if e.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.executions.clear()
        await self.state_channels.close()
        await self.pool.close()

    def wake(self) -> None:
        self.dispatcher.wake.set()

    async def _load_prefix(self) -> str:
        """This database's prefix of runner-side run ids, made once and shared by all
        replicas: two backends on different databases that share a runner never name a run
        alike, and every replica (and this one after a restart) names them the same, so
        re-attaching finds them. Not a secret: no credential derives from it."""
        value = "b" + secrets.token_hex(5)
        postgres = self.db.engine.dialect.name == "postgresql"
        insert = pg_insert if postgres else sqlite_insert
        async with self.db.session() as session:
            await session.execute(
                insert(BackendSetting)
                .values(name="runner_run_prefix", value=value)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            row = await session.get(BackendSetting, "runner_run_prefix")
            assert row is not None
            return row.value

    @property
    def prefix(self) -> str:
        return self._prefix

    def run_of(self, runner_run_id: str) -> int | None:
        """The run of this database that a runner-side run id names, if any."""
        step = StepId.parse(runner_run_id)
        return step.run if step is not None and step.prefix == self._prefix else None

    # -- executions ------------------------------------------------------------------
    def _claimed(self, claim: Claim) -> None:
        lease = self.pool.lease(claim.runner, claim.run_id)
        self._spawn(Execution(claim.run_id, claim.epoch, lease, claim), resume=False)

    def _adopted(self, orphan: Orphan, epoch: int) -> None:
        lease = self.pool.lease(orphan.runner, orphan.run_id)
        self._spawn(Execution(orphan.run_id, epoch, lease), resume=True)

    def _spawn(self, execution: Execution, *, resume: bool) -> None:
        self.executions[execution.run_id] = execution
        execution.task = asyncio.create_task(
            self._run(execution, resume), name=f"run-{execution.run_id}"
        )

    async def _run(self, execution: Execution, resume: bool) -> None:
        try:
            await self.executor.run(execution, resume)
        finally:
            if self.executions.get(execution.run_id) is execution:
                del self.executions[execution.run_id]
            self.wake()

    # -- what the API asks ---------------------------------------------------------------
    async def approve(
        self, run_id: int, actor: str, comment: str = "", actor_id: int | None = None
    ) -> None:
        async with self.db.session() as session:
            await run_transitions.approve(
                session,
                run_id,
                actor=actor,
                actor_id=actor_id,
                comment=comment,
                plan_ttl=self.options.plan_ttl,
            )
        self.wake()

    async def discard(self, run_id: int, actor: str, comment: str = "") -> None:
        async with self.db.session() as session:
            await run_transitions.discard(session, run_id, actor=actor, comment=comment)
        self.wake()

    async def cancel(self, run_id: int, *, force: bool, actor: str, comment: str = "") -> None:
        mode = CancelMode.FORCE if force else CancelMode.GRACEFUL
        async with self.db.session() as session:
            deliver = await run_transitions.cancel(
                session, run_id, mode, actor=actor, comment=comment
            )
        if not deliver:
            self.wake()
            return
        execution = self.executions.get(run_id)
        if execution is not None:
            await self.executor.signal_cancel(execution, mode.value)
