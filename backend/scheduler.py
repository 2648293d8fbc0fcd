"""The scheduler: every IAC_SCHEDULE_INTERVAL seconds, each backend queues the runs of the
schedules that are due (``store.schedules``).

Every backend runs it; none is elected. A pass reads the due schedules, then claims each
one in a transaction of its own (``store.schedules.fire``): the database lets exactly one
backend's claim of a due time match, and that backend queues the run in the same
transaction, so one run per due time however many backends there are, and a backend that
dies mid-pass leaves no half-made claim. A pass takes the time it works for as a
parameter (``tick(now)``), so tests drive it with a clock of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from backend.db import Database
from backend.models import utcnow
from backend.store import schedules
from backend.store.schedules import Fired

log = logging.getLogger("iac.backend.scheduler")

# Schedules claimed per pass at most; more due ones wait for the next pass.
BATCH = 200


class Scheduler:
    def __init__(
        self, db: Database, wake: Callable[[], None], interval: float, batch: int = BATCH
    ) -> None:
        self.db = db
        self.wake = wake  # the dispatcher's: a queued run is dispatched at once
        self.interval = interval
        self.batch = batch

    async def tick(self, now: datetime) -> list[Fired]:
        """One pass at time `now`: what each due time this backend claimed did."""
        async with self.db.session() as session:
            due = await schedules.due(session, now, self.batch)
        fired: list[Fired] = []
        for schedule_id, seen in due:
            try:
                async with self.db.session() as session:
                    outcome = await schedules.fire(session, schedule_id, seen, now)
            except Exception:  # one schedule's failure must not stop the others
                log.exception("schedule %d: its due time %s was not handled", schedule_id, seen)
                continue
            if outcome is None:
                continue  # another backend claimed it
            fired.append(outcome)
            if outcome.run_id is not None:
                log.info("schedule %d queued run %d", schedule_id, outcome.run_id)
            else:
                log.info("schedule %d queued nothing: %s", schedule_id, outcome.skipped)
        if any(f.run_id is not None for f in fired):
            self.wake()
        return fired

    async def run(self) -> None:
        """A pass at start (due times missed while down), then every interval, until
        cancelled."""
        while True:
            try:
                await self.tick(utcnow())
            except Exception:  # the database is away, say: the next pass retries
                log.exception("a scheduler pass failed")
            await asyncio.sleep(self.interval)
