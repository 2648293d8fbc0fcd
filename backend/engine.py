"""The run engine: the queue, dispatch to the runner pool, and the execution of each run.

A run moves through phases, each dispatched to a runner picked at that moment:

    queued -> running (plan phase: init + plan -out=tfplan on one runner, tfplan collected)
           -> succeeded                       (operation plan, or nothing to change)
           -> awaiting_approval -> applying   (apply/destroy; auto_approve skips the wait)
    applying (apply phase: init + apply tfplan on any fitting runner) -> succeeded
    any executing phase -> failed | canceled | timed_out

Claims are atomic (a conditional UPDATE under a row lock; `FOR UPDATE SKIP LOCKED` on
PostgreSQL), so several backends on one database never dispatch a run twice, and the
deployment row lock keeps one active run per deployment. Every step runs with
`on_disconnect=CONTINUE` and its runner-side id and seq offset are stored before it
starts, so a backend that restarts (or another one, once the heartbeat goes stale)
re-attaches from the last stored line: no line is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar, cast

import grpc
from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend import metrics
from backend.crypto import Cipher
from backend.db import Database, database_lost
from backend.errors import Conflict, Invalid
from backend.logs import LogBatch, LogHub
from backend.models import (
    TERMINAL_STATUSES,
    BackendSetting,
    ConfigVersion,
    Deployment,
    LogChunk,
    Run,
    RunEvent,
    RunnerStatus,
    RunStatus,
    StateLock,
    utcnow,
)
from backend.pool import RunnerPool, RunnerView, choose
from backend.runner_client import RunnerClient
from backend.state_channels import StateChannels
from backend.state_service import StateService
from backend.store import state as state_store
from backend.store import variables as variable_store
from backend.store.runs import add_event, get_run
from backend.store.variables import RunEnvironment
from backend.versions import Constraint, parse_constraint, required_version
from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac.backend.engine")
T = TypeVar("T")

# The tables, for the engine's own statements in its hot paths: plain Core, without the
# ORM's per-statement work (no objects are loaded or synchronised there).
RUNS = cast(Table, Run.__table__)
R = RUNS.c
DEPLOYMENTS = cast(Table, Deployment.__table__)
D = DEPLOYMENTS.c
C = cast(Table, ConfigVersion.__table__).c
LOG_CHUNKS = cast(Table, LogChunk.__table__)
RUN_EVENTS = cast(Table, RunEvent.__table__)
STATE_LOCKS = cast(Table, StateLock.__table__)

# Statuses in which a run holds its deployment: no other run of it may start.
HOLDING = (
    RunStatus.RUNNING.value,
    RunStatus.PLANNED.value,
    RunStatus.AWAITING_APPROVAL.value,
    RunStatus.APPLYING.value,
)
EXECUTING = (RunStatus.RUNNING.value, RunStatus.APPLYING.value)
# Merged into every configuration so terraform keeps its state in this backend.
BACKEND_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'
OVERRIDE_NAME = "zz_iac_backend_override.tf"
PLAN_FILE = "tfplan"
# gRPC codes that mean the runner refused the call itself: retrying cannot help.
REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}
BUSY = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
FLUSH_LINES = 2000
FLUSH_BYTES = 256 * 1024
# Live followers get lines at once from the hub, not the store; a re-attach re-reads
# whatever was not stored from the runner.
FLUSH_INTERVAL = 1.0
# Unstored log bytes at which reading from the runner pauses until they are stored.
BACKLOG_BYTES = 4 * FLUSH_BYTES
# A dispatch pass looks at the first PASS_ROWS waiting runs (highest priority first) while
# some runner has a free slot, else only at runs with no wait reason yet; at the first
# FULL_PASS_ROWS again at least every REASONS_INTERVAL seconds (so every reason's kind
# follows the pool, and a run stuck behind PASS_ROWS unplaceable ones still gets placed).
PASS_ROWS = 64
FULL_PASS_ROWS = 500
REASONS_INTERVAL = 2.0


@dataclass(frozen=True)
class EngineOptions:
    backend_id: str
    max_state_bytes: int
    timeouts: dict[str, int]
    heartbeat_interval: float = 5.0
    orphan_after: float = 30.0  # a run whose executor's heartbeat is older is adopted
    runner_lost_timeout: float = 15.0  # how long to retry reaching a runner mid-run
    dispatch_interval: float = 1.0


@dataclass(frozen=True)
class Step:
    name: str
    command: str
    args: tuple[str, ...] = ()
    collect: tuple[str, ...] = ()
    cleanup: bool = False


def phase_steps(operation: str, phase: str) -> list[Step]:
    init = Step("init", "init")
    if phase == "plan":
        args = ["-out=" + PLAN_FILE, "-detailed-exitcode"]
        if operation == "destroy":
            args.append("-destroy")
        return [init, Step("plan", "plan", tuple(args), (PLAN_FILE,), cleanup=True)]
    return [init, Step("apply", "apply", (PLAN_FILE,), cleanup=True)]


def tf_files(config_archive: bytes) -> dict[str, str]:
    """The top-level *.tf files of a configuration archive, as text."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(config_archive), mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and "/" not in member.name and member.name.endswith(".tf"):
                data = tar.extractfile(member)
                if data is not None:
                    files[member.name] = data.read().decode("utf-8", "replace")
    return files


def build_workspace(config_archive: bytes, plan_file: bytes | None) -> bytes:
    """The config archive plus the state-backend override (and the plan to apply)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(config_archive), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src:
            if member.name in (OVERRIDE_NAME, PLAN_FILE):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        extra = {OVERRIDE_NAME: BACKEND_OVERRIDE.encode()}
        if plan_file is not None:
            extra[PLAN_FILE] = plan_file
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _reason_kind(reason: str) -> str:
    """A wait reason without its numbers: a busy runner's changing count is no news."""
    return re.sub(r"\d+", "", reason)


def _parse_constraint(text: str | None) -> Constraint | None:
    if not text:
        return None
    try:
        return parse_constraint(text)
    except Invalid:
        return None  # terraform itself will say what is wrong with it


class StepFailed(Exception):
    """A step could not run or did not succeed; `status` is how the run ends."""

    def __init__(self, status: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


class RunnerBusy(Exception):
    """The runner refused to start the first step (full or draining): dispatch elsewhere."""


class LogWriter:
    """Publishes a run's lines to live followers at once and stores them in chunks."""

    def __init__(self, db: Database, hub: LogHub, run_id: int, last_seq: int) -> None:
        self.db = db
        self.hub = hub
        self.run_id = run_id
        self.last_seq = last_seq  # last line received
        self.stored_seq = last_seq
        self._lines: list[str] = []
        self._bytes = 0
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()
        hub.open(run_id)

    def add(self, offset: int, output: pb.Output) -> None:
        """Take a step's output batch (step seq + `offset` = run seq): text blocks, or one
        Line per line from a runner that predates them."""
        texts: list[str] = []
        first = 0
        pieces: Iterable[tuple[int, list[str]]] = (
            ((b.first_seq, b.text.split("\n")) for b in output.blocks)
            if output.blocks
            else ((line.seq, [line.text]) for line in output.lines)
        )
        for step_seq, lines in pieces:
            seq = offset + step_seq
            if seq + len(lines) <= self.last_seq + 1:
                continue  # already had them (re-attached from an earlier seq)
            if seq <= self.last_seq:
                lines = lines[self.last_seq + 1 - seq :]
                seq = self.last_seq + 1
            if not texts:
                first = seq
            texts.extend(lines)
            self._bytes += sum(map(len, lines))
        if not texts:
            return
        self.last_seq = first + len(texts) - 1
        self._lines.extend(texts)
        self.hub.publish(self.run_id, LogBatch(first, tuple(texts)))
        if len(self._lines) >= FLUSH_LINES or self._bytes >= FLUSH_BYTES:
            self._due.set()

    @property
    def backlogged(self) -> bool:
        return self._bytes >= BACKLOG_BYTES

    async def flush(self, then: Callable[[AsyncSession], Awaitable[T]] | None = None) -> T | None:
        """Store the lines received so far; with `then`, also run it in the same
        transaction (the engine's bookkeeping between and after steps) and return its
        result."""
        async with self._lock:
            if not self._lines and then is None:
                return None
            # Taken off only once stored: a failed write (the database restarting) keeps
            # them for the next flush, so no line is lost and none takes another's seq.
            lines = self._lines[:]
            first = self.stored_seq + 1
            last = first + len(lines) - 1
            async with self.db.session() as session:
                if lines:
                    await session.execute(
                        insert(LOG_CHUNKS).values(
                            run_id=self.run_id,
                            first_seq=first,
                            last_seq=last,
                            data="\n".join(lines),
                        )
                    )
                    await session.execute(
                        update(RUNS)
                        .where(R.id == self.run_id)
                        .values(last_seq=last, heartbeat_at=utcnow())
                    )
                result = await then(session) if then is not None else None
            if lines:
                del self._lines[: len(lines)]
                self._bytes = sum(len(line) for line in self._lines)
                self.stored_seq = last
                self.hub.stored(self.run_id, last)
            return result

    async def run(self) -> None:
        """Flush every FLUSH_INTERVAL, or sooner when a lot is waiting."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), FLUSH_INTERVAL)
            self._due.clear()
            try:
                await self.flush()
            except Exception as exc:  # the database is away: keep the lines, retry
                log.warning("storing the log of run %s failed, will retry: %s", self.run_id, exc)


@dataclass
class Execution:
    run_id: int
    runner: str
    task: asyncio.Task[None] | None = None
    runner_run_id: str = ""
    client: RunnerClient | None = None
    canceled: str = ""  # the cancel mode already sent to the runner
    started: float = field(default_factory=time.monotonic)
    released: bool = False  # its runner slot given back to the pool


@dataclass
class Job:
    """What an execution needs from the database, read in one transaction."""

    run: Run
    deployment: Deployment
    archive: bytes
    env: RunEnvironment


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
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._prefix = ""  # of runner-side run ids: this database's, the same for replicas
        self._is_postgres = db.engine.dialect.name == "postgresql"
        self._required: dict[int, str | None] = {}  # config version id -> required_version
        self.state_service = StateService(
            db, cipher, options.backend_id, options.max_state_bytes, self.run_of
        )
        self.state_channels = StateChannels(
            options.backend_id, lambda runner: partial(self.state_service.handle, runner)
        )
        self._last_full_pass = 0.0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._prefix = await self._load_prefix()
        self.pool.on_clients = self.state_channels.sync
        await self.pool.refresh()
        await self.adopt_orphans()
        self._background = [
            asyncio.create_task(self.pool.run(), name="pool"),
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._maintenance_loop(), name="maintenance"),
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
        self._wake.set()

    async def _load_prefix(self) -> str:
        """This database's prefix of runner-side run ids, made once and shared by all
        replicas: two backends on different databases that share a runner never name a run
        alike, and every replica (and this one after a restart) names them the same, so
        re-attaching finds them. Not a secret: no credential derives from it."""
        value = "b" + secrets.token_hex(5)
        insert = pg_insert if self._is_postgres else sqlite_insert
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
        prefix, _, rest = runner_run_id.partition("-r")
        number = rest.split("-", 1)[0]
        if prefix != self._prefix or not number.isascii() or not number.isdigit():
            return None
        return int(number)

    # -- dispatch ----------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch pass failed")
            waits = [
                asyncio.create_task(self._wake.wait()),
                asyncio.create_task(self.pool.changed.wait()),
            ]
            await asyncio.wait(
                waits, timeout=self.options.dispatch_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waits:
                w.cancel()
            self._wake.clear()
            self.pool.changed.clear()

    async def dispatch_once(self) -> int:
        """Place as many waiting runs as the pool can take, highest priority first.

        Reads only the columns placement needs (never a run's plan file or a
        configuration's archive, but once per configuration for its required_version),
        and only as many runs as the pool's state calls for (see PASS_ROWS)."""
        now = time.monotonic()
        full = now - self._last_full_pass >= REASONS_INTERVAL
        free = any(
            v.status == RunnerStatus.HEALTHY.value and v.free > 0 for v in self.pool.views.values()
        )
        query = (
            select(
                R.id,
                R.status,
                R.operation,
                R.config_version_id,
                R.tool_version,
                R.wait_reason,
                R.deployment_id,
                D.required_labels,
                D.tool,
                D.version_constraint,
            )
            .join(DEPLOYMENTS, D.id == R.deployment_id)
            .where(
                R.claimed_by.is_(None),
                R.status.in_((RunStatus.QUEUED.value, RunStatus.APPLYING.value)),
            )
            .order_by(R.priority.desc(), R.created_at, R.id)
            .limit(FULL_PASS_ROWS if full else PASS_ROWS)
        )
        if not full and not free:
            query = query.where(R.wait_reason == "")
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                if full:
                    self._last_full_pass = now
                return 0
            held = set(
                (
                    await session.scalars(
                        select(R.deployment_id).where(R.status.in_(HOLDING)).distinct()
                    )
                ).all()
            )
            missing = {
                r.config_version_id
                for r in rows
                if not r.version_constraint and r.config_version_id not in self._required
            }
            archives = (
                (await session.execute(select(C.id, C.archive).where(C.id.in_(missing)))).all()
                if missing
                else []
            )
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
            queued = row.status == RunStatus.QUEUED.value
            required = row.required_labels or {}
            labels = ",".join(f"{k}={v}" for k, v in sorted(required.items()))
            if queued and row.deployment_id in held:
                waits[row.id] = "waiting for the active run of this deployment to finish"
                depth[labels] = depth.get(labels, 0) + 1
                continue
            constraint = row.version_constraint or self._required.get(row.config_version_id)
            operation = "plan" if queued else row.operation
            exact = None if queued else row.tool_version
            key = (labels, row.tool, operation, constraint, exact)
            choice = decided.get(key)
            if choice is None:
                choice = choose(
                    list(self.pool.views.values()),
                    required,
                    row.tool,
                    operation,
                    _parse_constraint(constraint),
                    exact,
                )
                decided[key] = choice
            views, reason, version = choice
            if not views:
                waits[row.id] = reason
                depth[labels] = depth.get(labels, 0) + 1
                continue
            runner = views[0].name
            created_at = await self._claim(row.id, row.status, runner, version)
            if created_at is not None:
                placed += 1
                held.add(row.deployment_id)
                metrics.DISPATCH_LATENCY.observe(
                    max((utcnow() - created_at).total_seconds(), 0) if queued else 0
                )
                self._spawn(row.id, runner, resume=False)
                decided.clear()  # the runner's load changed
        for labels, n in depth.items():
            metrics.QUEUE_DEPTH.labels(labels or "none").set(n)
        await self._record_waits(rows, waits)
        return placed

    async def _record_waits(self, rows: Any, waits: dict[int, str]) -> None:
        """Store wait reasons whose kind changed: not a busy runner's new count each pass."""
        changed = {
            row.id: waits[row.id]
            for row in rows
            if row.id in waits and _reason_kind(row.wait_reason) != _reason_kind(waits[row.id])
        }
        if not changed:
            return
        async with self.db.session() as session:
            for run_id, reason in changed.items():
                await session.execute(
                    update(RUNS)
                    .where(R.id == run_id, R.claimed_by.is_(None))
                    .values(wait_reason=reason)
                )

    async def _claim(self, run_id: int, status: str, runner: str, version: str) -> Any:
        """Claim the run for this backend on `runner`; its created_at, or None when it was
        taken (by another replica) or changed since the pass read it."""
        async with self.db.session() as session:
            query = select(
                R.claimed_by,
                R.status,
                R.deployment_id,
                R.dispatch_count,
                R.last_seq,
                R.started_at,
                R.created_at,
            ).where(R.id == run_id)
            if self._is_postgres:
                query = query.with_for_update(skip_locked=True)
            run = (await session.execute(query)).first()
            if run is None or run.claimed_by is not None or run.status != status:
                return None
            new_status = status
            if status == RunStatus.QUEUED.value:
                # Serialise claims per deployment, then check nobody holds it (on SQLite
                # the transaction itself is exclusive: BEGIN IMMEDIATE).
                if self._is_postgres:
                    await session.execute(
                        select(D.id).where(D.id == run.deployment_id).with_for_update()
                    )
                holder = await session.scalar(
                    select(R.id)
                    .where(
                        R.deployment_id == run.deployment_id,
                        R.status.in_(HOLDING),
                        R.id != run_id,
                    )
                    .limit(1)
                )
                if holder is not None:
                    return None
                new_status = RunStatus.RUNNING.value
            count = run.dispatch_count + 1
            now = utcnow()
            await session.execute(
                update(RUNS)
                .where(R.id == run_id)
                .values(
                    status=new_status,
                    claimed_by=self.options.backend_id,
                    runner_id=runner,
                    tool_version=version,
                    dispatch_count=count,
                    heartbeat_at=now,
                    started_at=run.started_at or now,
                    wait_reason="",
                    runner_run_id=None,
                    step_seq_offset=run.last_seq,
                )
            )
            phase = "plan" if new_status == RunStatus.RUNNING.value else "apply"
            await session.execute(
                insert(RUN_EVENTS).values(
                    run_id=run_id,
                    kind="dispatched",
                    message=f"{phase} phase on runner {runner} by backend "
                    f"{self.options.backend_id}",
                )
            )
        return run.created_at

    def _spawn(self, run_id: int, runner: str, *, resume: bool) -> None:
        self.pool.reserve(runner, run_id)
        execution = Execution(run_id, runner)
        self.executions[run_id] = execution
        execution.task = asyncio.create_task(self._execute(execution, resume), name=f"run-{run_id}")

    # -- adoption of runs whose executor is gone ------------------------------------------
    async def adopt_orphans(self) -> int:
        """Re-attach runs this backend was executing before a restart, and runs whose
        executor stopped sending heartbeats (another replica died)."""
        stale = utcnow() - timedelta(seconds=self.options.orphan_after)
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Run.id, Run.claimed_by, Run.heartbeat_at, Run.runner_id).where(
                        Run.status.in_(EXECUTING),
                        Run.claimed_by.is_not(None),
                        or_(
                            Run.claimed_by == self.options.backend_id,
                            Run.heartbeat_at < stale,
                            Run.heartbeat_at.is_(None),
                        ),
                    )
                )
            ).all()
        adopted = 0
        for run_id, claimed_by, heartbeat_at, runner in rows:
            if run_id in self.executions:
                continue
            async with self.db.session() as session:
                result = await session.execute(
                    update(Run)
                    .where(
                        Run.id == run_id,
                        Run.claimed_by == claimed_by,
                        Run.heartbeat_at.is_(None)
                        if heartbeat_at is None
                        else Run.heartbeat_at == heartbeat_at,
                    )
                    .values(claimed_by=self.options.backend_id, heartbeat_at=utcnow())
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                await add_event(
                    session, run_id, "adopted", f"re-attached by {self.options.backend_id}"
                )
            adopted += 1
            self._spawn(run_id, runner or "", resume=True)
        return adopted

    async def _maintenance_loop(self) -> None:
        last_heartbeat = last_adopt = 0.0
        while True:
            await asyncio.sleep(0.5)
            try:
                now = time.monotonic()
                await self._deliver_cancels()
                if now - last_heartbeat >= self.options.heartbeat_interval:
                    last_heartbeat = now
                    await self._heartbeat()
                if now - last_adopt >= self.options.orphan_after / 3:
                    last_adopt = now
                    await self.adopt_orphans()
            except Exception:
                log.exception("maintenance pass failed")

    async def _heartbeat(self) -> None:
        ids = list(self.executions)
        if not ids:
            return
        async with self.db.session() as session:
            await session.execute(
                update(RUNS)
                .where(R.id.in_(ids), R.claimed_by == self.options.backend_id)
                .values(heartbeat_at=utcnow())
            )

    async def _deliver_cancels(self) -> None:
        """Cancels asked through any replica reach the runner from the one executing."""
        ids = list(self.executions)
        if not ids:
            return
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(R.id, R.cancel_requested).where(
                        R.id.in_(ids), R.cancel_requested.is_not(None)
                    )
                )
            ).all()
        for run_id, mode in rows:
            await self._signal_cancel(run_id, str(mode))

    async def _signal_cancel(self, run_id: int, mode: str) -> None:
        execution = self.executions.get(run_id)
        if execution is None or execution.canceled == mode or execution.canceled == "force":
            return
        if execution.client is None or not execution.runner_run_id:
            return  # between steps: the executor checks before the next one
        execution.canceled = mode
        try:
            await execution.client.cancel(execution.runner_run_id, force=mode == "force")
        except grpc.aio.AioRpcError as exc:
            log.warning("cancel of run %s on %s: %s", run_id, execution.runner, exc.details())
            execution.canceled = ""

    # -- API-facing operations -------------------------------------------------------------
    async def approve(self, run_id: int) -> Run:
        async with self.db.session() as session:
            run = await get_run(session, run_id, for_update=True)
            if run.status != RunStatus.AWAITING_APPROVAL.value:
                raise Conflict(
                    f"run {run_id} is {run.status}; only a run awaiting approval can be approved"
                )
            run.status = RunStatus.APPLYING.value
            run.claimed_by = None
            await add_event(session, run.id, "approved", "")
        self.wake()
        return run

    async def cancel(self, run_id: int, *, force: bool) -> Run:
        mode = "force" if force else "graceful"
        async with self.db.session() as session:
            run = await get_run(session, run_id, for_update=True)
            if run.status in TERMINAL_STATUSES:
                raise Conflict(f"run {run_id} has already ended ({run.status})")
            if run.claimed_by is None:
                # Nothing is executing: queued, planned, awaiting approval, or between phases.
                await self._end(
                    session, run, RunStatus.CANCELED.value, f"canceled while {run.status}"
                )
                return run
            run.cancel_requested = mode
            await add_event(session, run.id, "cancel_requested", mode)
        await self._signal_cancel(run_id, mode)
        return run

    # -- execution ---------------------------------------------------------------------------
    async def _execute(self, execution: Execution, resume: bool) -> None:
        run_id = execution.run_id
        writer: LogWriter | None = None
        flusher: asyncio.Task[None] | None = None
        try:
            job = await self._load(run_id)
            writer = LogWriter(self.db, self.hub, run_id, job.run.last_seq)
            flusher = asyncio.create_task(writer.run())
            await self._execute_phase(execution, writer, resume, job)
        except asyncio.CancelledError:
            raise
        except RunnerBusy as exc:
            await self._requeue(run_id, str(exc))
        except StepFailed as exc:
            await self._finish(run_id, exc.status, str(exc), exc.exit_code, writer)
        except Exception as exc:
            if database_lost(exc):
                # A restart or failover of the database, not a fault of the run, which goes
                # on on its runner: left claimed, the maintenance loop re-attaches it.
                log.warning("run %s: lost the database (%s); re-attaching later", run_id, exc)
                return
            log.exception("run %s failed in the engine", run_id)
            with contextlib.suppress(Exception):
                if writer is not None:
                    await writer.flush()
            await self._finish(run_id, RunStatus.FAILED.value, f"internal error: {exc}", None)
        finally:
            if flusher is not None:
                flusher.cancel()
            current = self.executions.get(run_id)
            if current is execution:  # a re-dispatch may have replaced it
                del self.executions[run_id]
            if current in (execution, None):
                self._release(execution)
            self.hub.close(run_id)
            self.wake()

    def _release(self, execution: Execution) -> None:
        """Give the execution's runner slot back (once). Dispatch is woken when the run's
        bookkeeping is stored (a pass before then would still find its deployment held)."""
        if not execution.released:
            execution.released = True
            self.pool.release(execution.runner, execution.run_id)

    async def _load(self, run_id: int) -> Job:
        async with self.db.session() as session:
            run = await get_run(session, run_id)
            deployment = await session.get(Deployment, run.deployment_id)
            archive = await session.scalar(
                select(ConfigVersion.archive).where(ConfigVersion.id == run.config_version_id)
            )
            assert deployment is not None and archive is not None
            env = await variable_store.run_environment(session, self.cipher, deployment)
        return Job(run, deployment, archive, env)

    async def _execute_phase(
        self, execution: Execution, writer: LogWriter, resume: bool, job: Job
    ) -> None:
        run_id = execution.run_id
        run, deployment, env = job.run, job.deployment, job.env
        plan_file = self.cipher.unseal(run.plan_file) if run.plan_file else None
        phase = "plan" if run.status == RunStatus.RUNNING.value else "apply"
        steps = phase_steps(run.operation, phase)
        client = await self.pool.client_for(run.runner_id or "")
        if client is None:
            raise StepFailed(
                RunStatus.FAILED.value, f"runner {run.runner_id!r} is no longer registered"
            )
        execution.client = client
        workspace = await asyncio.to_thread(
            build_workspace, job.archive, plan_file if phase == "apply" else None
        )
        env_vars = env.env_vars
        sensitive = env.sensitive_env
        # Named like the runner-side runs: two databases' runs never share a directory.
        work_dir = f"{self._prefix}-run-{run.id}-{phase}-{run.dispatch_count}"
        timeout = self.options.timeouts.get(run.operation, 3600)

        start = 0
        attach: tuple[str, int] | None = None
        if resume and run.runner_run_id:
            step_name = run.runner_run_id.rsplit("-", 1)[1]
            start = next(i for i, s in enumerate(steps) if s.name == step_name)
            attach = (run.runner_run_id, run.step_seq_offset)
        plan_result: pb.Result | None = None
        for index in range(start, len(steps)):
            step = steps[index]
            if attach is not None and index == start:
                await self._check_canceled(run_id)
                runner_run_id, offset = attach
                execution.runner_run_id = runner_run_id
                self.pool.step(execution.runner, run_id, runner_run_id)
                result = await self._follow(execution, writer, runner_run_id, offset, None)
            else:
                runner_run_id = f"{self._prefix}-r{run.id}-{phase}-{run.dispatch_count}-{step.name}"
                offset = writer.last_seq  # no step is streaming: nothing arrives meanwhile

                async def begin(
                    session: AsyncSession, rid: str = runner_run_id, at: int = offset
                ) -> bool:
                    # One transaction: the lines so far stored (a re-attach resumes from
                    # the stored ones), the step recorded, unless a cancel came first.
                    result = await session.execute(
                        update(RUNS)
                        .where(R.id == run_id, R.cancel_requested.is_(None))
                        .values(runner_run_id=rid, step_seq_offset=at)
                    )
                    return bool(result.rowcount == 1)  # type: ignore[attr-defined]

                if not await writer.flush(then=begin):
                    await self._check_canceled(run_id)
                    raise StepFailed(RunStatus.FAILED.value, f"run {run_id} no longer exists")
                execution.runner_run_id = runner_run_id
                self.pool.step(execution.runner, run_id, runner_run_id)
                request = pb.ExecuteRequest(
                    run_id=runner_run_id,
                    tool=deployment.tool,
                    work_dir=work_dir,
                    command=step.command,
                    args=list(step.args),
                    env_vars=env_vars,
                    timeout=timeout,
                    sensitive_env=sensitive,
                    mask_values=env.mask_values,
                    workspace=workspace if step.name == "init" else b"",
                    collect=list(step.collect),
                    cleanup=step.cleanup,
                    on_disconnect=pb.CONTINUE,
                    tool_version=run.tool_version or "",
                    packed_output=True,
                    state_channel=self.options.backend_id,
                )
                result = await self._follow(
                    execution, writer, runner_run_id, offset, request, first=index == 0
                )
            await self._check_step(execution, step, result)
            if step.name == "plan":
                plan_result = result
        # The runner is done with this run: its slot may take the next one already.
        self._release(execution)
        if phase == "plan":
            assert plan_result is not None
            await self._plan_done(run, plan_result, writer)
        else:
            await self._finish(run_id, RunStatus.SUCCEEDED.value, "", 0, writer)

    async def _check_canceled(self, run_id: int) -> None:
        async with self.db.session() as session:
            mode = await session.scalar(select(R.cancel_requested).where(R.id == run_id))
        if mode:
            raise StepFailed(RunStatus.CANCELED.value, f"canceled ({mode}) between steps")

    async def _check_step(self, execution: Execution, step: Step, result: pb.Result) -> None:
        ok = result.success or (step.name == "plan" and result.exit_code == 2)
        if ok:
            return
        outcome = result.outcome
        if outcome in ("canceled", "killed") and execution.canceled:
            status = RunStatus.CANCELED.value
        elif outcome == "timed_out":
            status = RunStatus.TIMED_OUT.value
        else:
            status = RunStatus.FAILED.value
        message = f"{step.command}: {result.error_msg or 'failed'}"
        raise StepFailed(status, message, result.exit_code)

    async def _follow(
        self,
        execution: Execution,
        writer: LogWriter,
        runner_run_id: str,
        offset: int,
        request: pb.ExecuteRequest | None,
        *,
        first: bool = False,
    ) -> pb.Result:
        """Stream one step to its result: Execute (or Attach), re-attaching after a lost
        connection until `runner_lost_timeout` has passed without reaching the runner."""
        client = execution.client
        assert client is not None
        started = request is None
        lost_since: float | None = None
        last_error = ""
        busy_deadline = time.monotonic() + self.options.runner_lost_timeout
        while True:
            if started:
                stream: AsyncIterator[pb.ExecuteEvent] = client.attach(
                    runner_run_id, writer.last_seq - offset + 1, self.options.backend_id
                )
            else:
                assert request is not None
                stream = client.execute(request)
            try:
                async for event in stream:
                    lost_since = None
                    kind = event.WhichOneof("event")
                    if kind == "output":
                        writer.add(offset, event.output)
                        if writer.backlogged:
                            # Store before reading on: the runner's stream (and so the
                            # tool's pipe) waits instead of this process's memory growing.
                            await writer.flush()
                    elif kind == "started":
                        started = True
                    elif kind == "result":
                        return event.result
                last_error = "the stream ended without a result"
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                last_error = f"{code.name}: {exc.details()}"
                if not started and code in BUSY:
                    if first:
                        raise RunnerBusy(
                            f"runner {execution.runner} refused: {last_error}"
                        ) from None
                    if time.monotonic() < busy_deadline:
                        await asyncio.sleep(0.5)
                        continue
                if code in REFUSED or (not started and code in BUSY):
                    raise StepFailed(
                        RunStatus.FAILED.value, f"runner {execution.runner} refused: {last_error}"
                    ) from None
                if code == grpc.StatusCode.NOT_FOUND:
                    raise StepFailed(
                        RunStatus.FAILED.value,
                        f"runner {execution.runner} no longer knows run {runner_run_id} "
                        "(it restarted or forgot it)",
                    ) from None
                if not started:
                    # The Execute may or may not have reached the runner: find out by Attach.
                    started = True
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since > self.options.runner_lost_timeout:
                self.pool.mark_unhealthy(execution.runner)
                raise StepFailed(
                    RunStatus.FAILED.value,
                    f"lost contact with runner {execution.runner} for more than "
                    f"{self.options.runner_lost_timeout:g} s ({last_error})",
                )
            await asyncio.sleep(0.5)

    async def _plan_done(self, run: Run, result: pb.Result, writer: LogWriter) -> None:
        """The plan phase succeeded: the run ends, or waits for approval or its apply."""
        run_id = run.id
        plan = next((a.content for a in result.artifacts if a.path == PLAN_FILE), None)
        changes = result.exit_code == 2
        sealed = self.cipher.seal(plan) if plan is not None else None
        if run.operation == "plan" or not changes:
            # The common end, in plain statements: nothing else about the run can have
            # changed while it executed here (the operation and deployment never do).
            values: dict[str, Any] = {"has_changes": changes, "plan_file": sealed}
            if result.tool_version:
                values["tool_version"] = result.tool_version
            note = "plan has changes" if changes else "no changes"

            async def ended(session: AsyncSession) -> None:
                await self._end_quickly(
                    session, run_id, run.deployment_id, RunStatus.SUCCEEDED.value, 0, note, values
                )

            await writer.flush(then=ended)  # the last lines, in the same transaction
            self.wake()
            return

        async def done(session: AsyncSession) -> None:
            run = await get_run(session, run_id, for_update=True)
            run.has_changes = changes
            run.plan_file = sealed
            run.tool_version = result.tool_version or run.tool_version
            if plan is None:
                await self._end(
                    session, run, RunStatus.FAILED.value, "the plan file was not returned"
                )
                return
            run.claimed_by = None
            run.runner_run_id = None
            if run.auto_approve:
                run.status = RunStatus.APPLYING.value
                await add_event(session, run.id, "planned", "auto-approved")
            else:
                run.status = RunStatus.AWAITING_APPROVAL.value
                await add_event(session, run.id, "planned", "awaiting approval")

        await writer.flush(then=done)  # the last lines, in the same transaction
        self.wake()

    async def _requeue(self, run_id: int, reason: str) -> None:
        async with self.db.session() as session:
            run = await get_run(session, run_id, for_update=True)
            if run.status == RunStatus.RUNNING.value:
                run.status = RunStatus.QUEUED.value
            run.claimed_by = None
            run.runner_id = None
            run.wait_reason = reason
            await add_event(session, run.id, "requeued", reason)

    async def _finish(
        self,
        run_id: int,
        status: str,
        message: str,
        exit_code: int | None,
        writer: LogWriter | None = None,
    ) -> None:
        """End the run; with `writer`, its last lines are stored in the same transaction."""

        async def end(session: AsyncSession) -> None:
            run = await get_run(session, run_id, for_update=True)
            if run.status in TERMINAL_STATUSES:
                return
            await self._end(session, run, status, message, exit_code)

        if writer is not None:
            await writer.flush(then=end)
            return
        async with self.db.session() as session:
            await end(session)

    async def _end(
        self,
        session: Any,
        run: Run,
        status: str,
        message: str,
        exit_code: int | None = None,
        note: str = "",
    ) -> None:
        """Terminal bookkeeping in the caller's transaction: status, times, credentials
        revoked, and a state lock still held by the run released and recorded."""
        run.status = status
        run.ended_at = utcnow()
        run.error_msg = message
        run.exit_code = exit_code
        run.claimed_by = None
        lock = await state_store.get_lock(session, run.deployment_id)
        if lock is not None and lock.run_id == run.id:
            await state_store.release_lock(
                session, run.deployment_id, f"run {run.id} ended ({status}) holding it", run.id
            )
        await add_event(session, run.id, status, message or note)
        metrics.RUNS_FINISHED.labels(status).inc()

    async def _end_quickly(
        self,
        session: AsyncSession,
        run_id: int,
        deployment_id: int,
        status: str,
        exit_code: int | None,
        note: str,
        values: dict[str, Any],
    ) -> None:
        """`_end` for a run known to be executing here, without loading it."""
        await session.execute(
            update(RUNS)
            .where(R.id == run_id)
            .values(
                status=status,
                ended_at=utcnow(),
                error_msg="",
                exit_code=exit_code,
                claimed_by=None,
                **values,
            )
        )
        holder = await session.scalar(
            select(STATE_LOCKS.c.run_id).where(STATE_LOCKS.c.deployment_id == deployment_id)
        )
        if holder is not None and holder == run_id:
            await state_store.release_lock(
                session, deployment_id, f"run {run_id} ended ({status}) holding it", run_id
            )
        await session.execute(insert(RUN_EVENTS).values(run_id=run_id, kind=status, message=note))
        metrics.RUNS_FINISHED.labels(status).inc()
