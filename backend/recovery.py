"""Keeping executions alive across failures: adoption, heartbeats, cancel delivery.

- Adoption: runs this backend claimed before it restarted, and runs whose executing
  backend stopped sending heartbeats for `orphan_after` seconds (it died, or hangs), are
  claimed again (a new epoch: the old execution, should it wake up, writes nothing more)
  and re-attached from their last stored line.
- Heartbeats: every fifth of `orphan_after`, the runs this backend executes are marked
  alive: four may be missed (a slow database, a pause) before another backend adopts.
  Orphans are looked for as often, so a dead backend's runs are adopted between 4/5 and
  6/5 of `orphan_after` after its death.
- Cancels: a cancel asked through any backend is recorded on the run; the backend that
  executes it sends it to the runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from backend.db import Database
from backend.executor import Execution
from backend.store import executions
from backend.store.executions import Orphan

log = logging.getLogger("iac.backend.recovery")
TICK = 0.5


class Recovery:
    def __init__(
        self,
        db: Database,
        backend_id: str,
        running: dict[int, Execution],
        adopted: Callable[[Orphan, int], None],
        signal_cancel: Callable[[Execution, str], Awaitable[None]],
        *,
        orphan_after: float,
    ) -> None:
        self.db = db
        self.backend_id = backend_id
        self.running = running  # this backend's executions, by run id
        self.adopted = adopted  # begins the execution of an adopted run, in its new epoch
        self.signal_cancel = signal_cancel
        self.beat = orphan_after / 5  # between two heartbeats, and two looks for orphans
        self.orphan_after = orphan_after

    async def adopt_orphans(self) -> int:
        async with self.db.session() as session:
            found = await executions.orphans(session, self.backend_id, self.orphan_after)
        adopted = 0
        for orphan in found:
            if orphan.run_id in self.running:
                continue
            async with self.db.session() as session:
                epoch = await executions.adopt(session, orphan, self.backend_id)
            if epoch is None:
                continue  # another backend was quicker
            adopted += 1
            self.adopted(orphan, epoch)
        return adopted

    async def heartbeat(self) -> None:
        ids = list(self.running)
        if ids:
            async with self.db.session() as session:
                await executions.heartbeat(session, self.backend_id, ids)

    async def deliver_cancels(self) -> None:
        ids = list(self.running)
        if not ids:
            return
        async with self.db.session() as session:
            asked = await executions.pending_cancels(session, ids)
        for run_id, mode in asked:
            execution = self.running.get(run_id)
            if execution is not None:
                await self.signal_cancel(execution, mode)

    async def run(self) -> None:
        """The maintenance loop, until cancelled."""
        last_beat = 0.0
        while True:
            await asyncio.sleep(TICK)
            try:
                now = time.monotonic()
                await self.deliver_cancels()
                if now - last_beat >= self.beat:
                    last_beat = now
                    await self.heartbeat()
                    await self.adopt_orphans()
            except Exception:
                log.exception("maintenance pass failed")
