"""Dispatch: which waiting run goes to which runner, and why the others wait.

The invariants, held with any number of backends on one database (each is checked where
the claim is made, in one transaction, `backend.store.queue.claim`):

1. No run executes twice: a claim takes an unclaimed run in the status the pass read, and
   bumps its epoch; an execution whose epoch is gone writes nothing more.
2. At most one active run per deployment: a queued run is claimed only while no run of
   its deployment is running, awaiting approval or applying.
3. Within a deployment, runs start in the order they were queued (by id): a queued run is
   claimed only when no older run of its deployment is queued. A run a full runner
   refused is unclaimed, not requeued: it keeps its place, and its history shows no
   dispatch for it.
4. Across deployments, when a slot frees, the highest priority goes first, then the
   oldest. Priority never reorders the runs of one deployment.
5. A run no runner can take waits with a reason (`wait_reason`), and keeps no other run
   waiting: a pass reads a bounded part of the queue (see PASS_ROWS), never all of it.
6. A runner never gets more than its `max_concurrent` from this backend's view: its own
   runs there plus the others it reported; a runner that refused a run as full gets
   nothing more until its load changes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend import metrics
from backend.db import Database
from backend.errors import Invalid
from backend.models import RunnerStatus, RunStatus, utcnow
from backend.pool import RunnerPool, RunnerView, choose
from backend.steps import tf_files
from backend.store import queue
from backend.store.queue import Candidate, Claim
from backend.tool_versions import Constraint, parse_constraint, required_version

log = logging.getLogger("iac.backend.dispatcher")

# A dispatch pass reads a part of the queue bounded whatever its length: the first
# PASS_ROWS runs never looked at (a new run that can start starts at once, however many
# that cannot wait before it); the first PASS_ROWS in queue order while some runner has a
# free slot (the highest priority takes it); and, at least every REASONS_INTERVAL seconds,
# the FULL_PASS_ROWS after where the previous such pass stopped, from the start again
# after the end: every waiting run is looked at again (its reason follows the pool, a run
# that became placeable deep in the queue is placed) within queue / FULL_PASS_ROWS of them.
PASS_ROWS = 64
FULL_PASS_ROWS = 500
REASONS_INTERVAL = 2.0


def reason_kind(reason: str) -> str:
    """A wait reason without its numbers: a busy runner's changing count is no news."""
    return re.sub(r"\d+", "", reason)


def _constraint(text: str | None) -> Constraint | None:
    if not text:
        return None
    try:
        return parse_constraint(text)
    except Invalid:
        return None  # terraform itself will say what is wrong with it


class Dispatcher:
    def __init__(
        self,
        db: Database,
        pool: RunnerPool,
        backend_id: str,
        start: Callable[[Claim], None],
        interval: float = 1.0,
    ) -> None:
        self.db = db
        self.pool = pool
        self.backend_id = backend_id
        self.start = start  # begins the execution of a claim
        self.interval = interval
        self.wake = asyncio.Event()
        self._row_locks = db.engine.dialect.name == "postgresql"
        self._required: dict[int, str | None] = {}  # config version id -> required_version
        self._last_full_pass = 0.0
        self._resume: tuple[int, int] | None = None  # where the next full pass reads from

    async def run(self) -> None:
        """Dispatch passes until cancelled: on a wake-up, a pool change, or every interval."""
        while True:
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch pass failed")
            waits = [
                asyncio.create_task(self.wake.wait()),
                asyncio.create_task(self.pool.changed.wait()),
            ]
            await asyncio.wait(waits, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            self.wake.clear()
            self.pool.changed.clear()

    async def dispatch_once(self) -> int:
        """Place as many waiting runs as the pool can take; the number placed."""
        now = time.monotonic()
        full = now - self._last_full_pass >= REASONS_INTERVAL
        free = any(
            v.status == RunnerStatus.HEALTHY.value and v.free > 0 for v in self.pool.views.values()
        )
        async with self.db.session() as session:
            rows = await self._read(session, full, free)
            if not rows:
                if full:
                    self._last_full_pass = now
                return 0
            held = await queue.holders(session, {r.deployment_id for r in rows})
            missing = {
                r.config_version_id
                for r in rows
                if not r.version_constraint and r.config_version_id not in self._required
            }
            archives = await queue.config_archives(session, missing) if missing else []
        if archives:
            found = await asyncio.to_thread(
                lambda: {i: required_version(tf_files(a)) for i, a in archives}
            )
            self._required.update(found)
        if full:
            self._last_full_pass = now
        depth: dict[str, int] = {}
        placed = 0
        waits: dict[int, str] = {}
        # Placement depends on few things, the same for most runs: decided once per pass
        # (and again after each claim, which changes the pool's load).
        decided: dict[tuple[Any, ...], tuple[list[RunnerView], str, str]] = {}
        for row in rows:
            labels = ",".join(f"{k}={v}" for k, v in sorted(row.required_labels.items()))
            reason = self._blocked(row, held)
            choice: tuple[list[RunnerView], str, str] | None = None
            if not reason:
                choice = self._choose(row, decided)
                reason = choice[1] if not choice[0] else ""
            if reason or choice is None:
                waits[row.id] = reason
                depth[labels] = depth.get(labels, 0) + 1
                continue
            views, _, version = choice
            async with self.db.session() as session:
                claim = await queue.claim(
                    session,
                    row.id,
                    row.status,
                    views[0].name,
                    version,
                    self.backend_id,
                    row_locks=self._row_locks,
                )
            if claim is None:
                continue  # taken or changed meanwhile: the next pass sees it as it is
            placed += 1
            held[row.deployment_id] = (row.id, RunStatus.RUNNING.value)
            queued = row.head is not None
            latency = (utcnow() - claim.created_at).total_seconds() if queued else 0.0
            metrics.DISPATCH_LATENCY.observe(max(latency, 0.0))
            self.start(claim)
            decided.clear()  # the runner's load changed
        for labels, n in depth.items():
            metrics.QUEUE_DEPTH.labels(labels or "none").set(n)
        await self._record_waits(rows, waits)
        return placed

    async def _read(self, session: AsyncSession, full: bool, free: bool) -> list[Candidate]:
        """The runs this pass looks at, in queue order (see PASS_ROWS)."""
        found = await queue.candidates(session, limit=PASS_ROWS, new_only=True)
        start = self._resume
        if full:
            window = await queue.candidates(session, limit=FULL_PASS_ROWS, after=start)
            found += window
            end = len(window) == FULL_PASS_ROWS
            self._resume = (window[-1].priority, window[-1].id) if end else None
        # The top of the queue, for a free slot (or the reasons of a full pass), unless the
        # window began there.
        if (free and not full) or (full and start is not None):
            found += await queue.candidates(session, limit=PASS_ROWS)
        unique = {r.id: r for r in found}
        return sorted(unique.values(), key=lambda r: (-r.priority, r.id))

    @staticmethod
    def _blocked(row: Candidate, held: dict[int, tuple[int, str]]) -> str:
        """Why a queued run may not start whatever the pool looks like ("" if it may)."""
        if row.head is None:
            return ""  # an approved apply phase: it holds its deployment already
        if row.head != row.id:
            return f"waiting for run {row.head} (queued before it) of this deployment"
        holder = held.get(row.deployment_id)
        if holder is not None:
            run_id, status = holder
            return f"waiting for run {run_id} ({status}) of this deployment"
        return ""

    def _choose(
        self, row: Candidate, decided: dict[tuple[Any, ...], tuple[list[RunnerView], str, str]]
    ) -> tuple[list[RunnerView], str, str]:
        constraint = row.version_constraint or self._required.get(row.config_version_id)
        exact = row.tool_version if row.head is None else None  # apply with the plan's
        labels = tuple(sorted(row.required_labels.items()))
        key = (labels, row.tool, row.phase, row.operation, constraint, exact)
        choice = decided.get(key)
        if choice is None:
            operation = "plan" if row.head is not None else row.operation
            choice = choose(
                list(self.pool.views.values()),
                row.required_labels,
                row.tool,
                operation,
                _constraint(constraint),
                exact,
            )
            decided[key] = choice
        return choice

    async def _record_waits(self, rows: list[Candidate], waits: dict[int, str]) -> None:
        """Store wait reasons whose kind changed: not a busy runner's new count each pass."""
        changed = {
            row.id: waits[row.id]
            for row in rows
            if row.id in waits and reason_kind(row.wait_reason) != reason_kind(waits[row.id])
        }
        if changed:
            async with self.db.session() as session:
                await queue.record_waits(session, changed)
