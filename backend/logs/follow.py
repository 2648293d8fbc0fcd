"""Following a run's log: the stored lines, then the live ones, with no gap and no double.

Subscribe first (taking the hub's not-yet-stored batches at the same instant), then
replay the store, then take live batches; every line is passed on once, by seq. When
the run is not executing in this process (another replica runs it, it waits between
phases, or this follower fell behind and was dropped) the store is polled instead, and
the hub is joined again as soon as the run is live here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select

from backend.db import Database
from backend.logs.batch import LogBatch
from backend.logs.hub import LogHub, Subscription
from backend.models import TERMINAL_STATUSES, Run
from backend.store import logs as log_store

POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class StatusChange:
    status: str


@dataclass(frozen=True)
class KeepAlive:
    """Nothing happened for a while: lets the transport send a comment so proxies keep
    the connection open."""


KEEPALIVE_AFTER = 15.0


async def _status(db: Database, run_id: int) -> tuple[str, int]:
    async with db.session() as session:
        row = (
            await session.execute(select(Run.status, Run.last_seq).where(Run.id == run_id))
        ).one()
    return str(row[0]), int(row[1])


async def follow(
    db: Database, hub: LogHub, run_id: int, after_seq: int = 0
) -> AsyncIterator[LogBatch | StatusChange | KeepAlive]:
    """Batches of lines after `after_seq`, and status changes, until the run has ended
    and every stored line was sent."""
    sent = after_seq
    status = ""
    loop = asyncio.get_running_loop()
    last_sent = loop.time()  # of the last item yielded that was not a KeepAlive

    while True:
        sub: Subscription | None = None
        snapshot: list[LogBatch] = []
        if hub.is_live(run_id):
            sub, snapshot = hub.subscribe(run_id)
        try:
            # Replay what is stored.
            while True:
                async with db.session() as session:
                    chunks = await log_store.chunk_page(session, run_id, sent, None)
                if not chunks:
                    break
                for chunk in chunks:
                    part = chunk.after(sent)
                    if part is not None:
                        yield part
                        last_sent = loop.time()
                        sent = part.last_seq
            for held in snapshot:
                part = held.after(sent)
                if part is not None:
                    yield part
                    last_sent = loop.time()
                    sent = part.last_seq
            new_status, stored = await _status(db, run_id)
            if new_status != status:
                status = new_status
                yield StatusChange(status)
                last_sent = loop.time()
            if status in TERMINAL_STATUSES and sent >= stored and not hub.is_live(run_id):
                return
            if sub is not None:
                # Live: batches as they arrive; None means the run left this process.
                while True:
                    try:
                        batch = await asyncio.wait_for(sub.queue.get(), 1.0)
                    except TimeoutError:
                        new_status, _ = await _status(db, run_id)
                        if new_status != status:
                            status = new_status
                            yield StatusChange(status)
                            last_sent = loop.time()
                        elif loop.time() - last_sent > KEEPALIVE_AFTER:
                            yield KeepAlive()
                            last_sent = loop.time()
                        continue
                    if batch is None:
                        break
                    part = batch.after(sent)
                    if part is not None:
                        yield part
                        last_sent = loop.time()
                        sent = part.last_seq
                    if sub.overflowed:
                        break  # fell behind: catch up from the store
            else:
                if loop.time() - last_sent > KEEPALIVE_AFTER:
                    yield KeepAlive()
                    last_sent = loop.time()
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            if sub is not None:
                hub.unsubscribe(sub)
