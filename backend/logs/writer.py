"""The writer of one execution's log: lines published to live followers at once, stored in
chunks soon after, every write fenced by the execution's claim epoch.

A runner sends blocks of consecutive lines ({first_seq, stream, text}, seqs of the step);
the step's offset makes them the run's seqs. Blocks are published and stored as they came
(the blocks of one flush are one chunk); lines the run already has (a re-attach resumes
from the last stored line, so a block may overlap) are cut off with `LogBatch.after`.
Stored lines leave the buffer only once their transaction committed: a
failed write (the database restarting) keeps them for the next flush, so no line is lost
and none takes another's seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from backend.db import Database
from backend.logs.batch import LogBatch
from backend.logs.hub import LogHub
from backend.store import executions
from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac.backend.logs")
T = TypeVar("T")

FLUSH_LINES = 2000
FLUSH_BYTES = 256 * 1024
# Live followers get lines at once from the hub, not the store; a re-attach re-reads
# whatever was not stored from the runner.
FLUSH_INTERVAL = 1.0
# Unstored log bytes at which reading from the runner pauses until they are stored.
BACKLOG_BYTES = 4 * FLUSH_BYTES
# How the backend's own lines start (the web page shows them as headers).
PHASE_MARK = "==> "


class LogWriter:
    def __init__(self, db: Database, hub: LogHub, run_id: int, epoch: int, last_seq: int) -> None:
        self.db = db
        self.hub = hub
        self.run_id = run_id
        self.epoch = epoch
        self.last_seq = last_seq  # last line received
        self.stored_seq = last_seq
        self._blocks: list[LogBatch] = []  # received, not yet stored
        self._bytes = 0
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._fenced = False
        hub.open(run_id)

    def add(self, offset: int, output: pb.Output) -> None:
        """Take a step's output batch (step seq + `offset` = run seq); `executions.Fenced`
        once a flush found the run claimed by another backend."""
        if self._fenced:
            raise executions.Fenced(f"run {self.run_id} was claimed again")
        for block in output.blocks:
            fresh = LogBatch.of(offset + block.first_seq, block.text).after(self.last_seq)
            if fresh is None:
                continue  # already had them (re-attached from an earlier seq)
            self._keep(fresh)
        if self.last_seq - self.stored_seq >= FLUSH_LINES or self._bytes >= FLUSH_BYTES:
            self._due.set()

    def _keep(self, batch: LogBatch) -> None:
        self.last_seq = batch.last_seq
        self._blocks.append(batch)
        self._bytes += len(batch.text)
        self.hub.publish(self.run_id, batch)

    def note(self, text: str) -> None:
        """A line of the backend's own in the run's log (a phase or step header): stored and
        followed like the tool's lines, never masked (it holds no value of the run's)."""
        self._keep(LogBatch.of(self.last_seq + 1, PHASE_MARK + " ".join(text.splitlines())))

    @property
    def backlogged(self) -> bool:
        return self._bytes >= BACKLOG_BYTES

    async def flush(self, then: Callable[[AsyncSession], Awaitable[T]] | None = None) -> T | None:
        """Store the lines received so far; with `then`, also run it in the same
        transaction (the execution's bookkeeping between and after steps) and return its
        result. `executions.Fenced` when another backend claimed the run meanwhile."""
        async with self._lock:
            if not self._blocks and then is None:
                return None
            blocks = self._blocks[:]
            chunk = None
            if blocks:  # consecutive blocks: one chunk, joined block by block
                text = "\n".join(b.text for b in blocks)
                chunk = LogBatch(blocks[0].first_seq, blocks[-1].last_seq, text)
            try:
                async with self.db.session() as session:
                    if chunk is not None:
                        await executions.store_chunk(session, self.run_id, self.epoch, chunk)
                    else:
                        await executions.check_claim(session, self.run_id, self.epoch)
                    result = await then(session) if then is not None else None
            except executions.Fenced:
                self._fenced = True
                raise
            if chunk is not None:
                del self._blocks[: len(blocks)]
                self._bytes = sum(len(b.text) for b in self._blocks)
                self.stored_seq = chunk.last_seq
                self.hub.stored(self.run_id, self.stored_seq)
            return result

    async def run(self) -> None:
        """Flush every FLUSH_INTERVAL, or sooner when a lot is waiting; stops when fenced."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), FLUSH_INTERVAL)
            self._due.clear()
            try:
                await self.flush()
            except executions.Fenced:
                return  # the execution finds out at its next batch and stops
            except Exception as exc:  # the database is away: keep the lines, retry
                log.warning("storing the log of run %s failed, will retry: %s", self.run_id, exc)
