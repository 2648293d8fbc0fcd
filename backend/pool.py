"""The runner pool: who is up, what each runner offers, and which one gets the next run.

A poll loop asks every registered runner for its health and `GetInfo` and records the
answer (status, labels, tools, load) in the database, so every backend replica and the
API see the same picture. Between polls the pool counts its own dispatches so a burst of
runs does not pile onto one runner: a runner's load is the runs of others it reported at
the last poll (told apart from this backend's by runner-side run id) plus this backend's
own runs on it now (placed and not yet released, whatever step they are at). So a poll,
always a little old, never makes a runner look emptier or fuller than this backend knows
it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from backend import metrics
from backend.crypto import Cipher
from backend.db import Database
from backend.models import Runner, RunnerStatus, utcnow
from backend.runner_client import RunnerClient, RunnerUnreachable
from backend.steps import RUNNER_FEATURES
from backend.store import runners as runner_store
from backend.store.runners import RunnerConnection
from backend.tool_versions import Constraint, highest

if TYPE_CHECKING:
    from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac.backend.pool")

# An idle runner whose answers do not change is asked every this many poll intervals (8 s
# by default); a busy, changing, unhealthy or disconnected one every interval.
IDLE_EVERY = 4


@dataclass
class Answer:
    """A runner's last `GetInfo` answer, as received and as recorded, and when to ask again
    if it stays the same (0: at the next pass)."""

    info: pb.RunnerInfo
    recorded: dict[str, Any]
    next_poll: float = 0.0


@dataclass
class Occupancy:
    """What this backend knows of its own use of one runner, kept across polls."""

    # This backend's runs placed on the runner: run id -> runner-side id of the step in
    # flight ("" before the first).
    runs: dict[int, str] = field(default_factory=dict)
    # Runner-side ids of the steps this backend started there (that a report may still name).
    steps: set[str] = field(default_factory=set)
    # The runner's report when it last refused a run as full: it gets nothing until a
    # report differs (its load changed) or this backend frees one of its slots.
    full_at: tuple[int, frozenset[str]] | None = None


@dataclass
class RunnerView:
    name: str
    status: str
    labels: dict[str, str]
    max_concurrent: int = 0
    reported: int = 0  # runs active on the runner at the last poll
    reported_runs: frozenset[str] = frozenset()  # their runner-side ids
    tools: list[dict[str, Any]] = field(default_factory=list)
    accept: list[str] = field(default_factory=list)
    features: frozenset[str] = frozenset()
    ours: Occupancy = field(default_factory=Occupancy)  # shared with the pool

    @property
    def active(self) -> int:
        ours = sum(1 for step in self.reported_runs if step in self.ours.steps)
        return max(self.reported - ours, 0) + len(self.ours.runs)

    @property
    def free(self) -> int:
        if self.ours.full_at == (self.reported, self.reported_runs):
            return 0
        return self.max_concurrent - self.active

    def versions(self, tool: str) -> list[str]:
        return [
            str(t.get("version")) for t in self.tools if t.get("name") == tool and t.get("version")
        ]

    def accepts(self, operation: str) -> bool:
        return not self.accept or operation in self.accept


def view_of(row: Runner, ours: Occupancy | None = None) -> RunnerView:
    info = row.info or {}
    labels = {**(row.labels or {}), **(info.get("labels") or {})}
    return RunnerView(
        name=row.id,
        status=row.status,
        labels=labels,
        max_concurrent=int(info.get("max_concurrent") or 0),
        reported=int(info.get("active") or 0),
        reported_runs=frozenset(str(r) for r in info.get("active_runs") or ()),
        tools=list(info.get("tools") or []),
        accept=list(info.get("accept") or []),
        features=frozenset(info.get("features") or ()),
        ours=ours if ours is not None else Occupancy(),
    )


def choose(
    views: list[RunnerView],
    required: dict[str, str],
    tool: str,
    operation: str,
    constraint: Constraint | None = None,
    exact: str | None = None,
) -> tuple[list[RunnerView], str, str]:
    """Runners that can take the run, least loaded first, and the tool version to run:
    `exact` when given (an apply uses its plan's version), else the highest version any
    fitting runner has that satisfies `constraint`. With no runner: ([], reason, "")."""
    labelled = [v for v in views if required.items() <= v.labels.items()]
    if not labelled:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(required.items())) or "any"
        return [], f"no registered runner has the labels {wanted}", ""
    up = [v for v in labelled if v.status == RunnerStatus.HEALTHY.value]
    if not up:
        states = ", ".join(f"{v.name}: {v.status}" for v in labelled)
        return [], f"no healthy runner with the required labels ({states})", ""
    current = [v for v in up if v.features >= RUNNER_FEATURES]
    if not current:
        names = ", ".join(v.name for v in up)
        return (
            [],
            f"no healthy runner with the required labels runs a recent enough "
            f"iac-runner-server ({names}: without {', '.join(sorted(RUNNER_FEATURES))}); "
            "upgrade them",
            "",
        )
    able = [v for v in current if v.accepts(operation) and v.versions(tool)]
    if not able:
        return (
            [],
            f"no healthy runner with the required labels has {tool} and accepts {operation}",
            "",
        )
    offered = sorted({ver for v in able for ver in v.versions(tool)})
    if exact:
        target: str | None = exact if exact in offered else None
        wanted = f"{tool} {exact} (the version of this run's plan)"
    else:
        target = highest(offered, constraint)
        wanted = f"{tool} satisfying {constraint.text!r}" if constraint else f"a release of {tool}"
    if target is None:
        return [], f"no healthy runner has {wanted}; available: {', '.join(offered)}", ""
    able = [v for v in able if target in v.versions(tool)]
    free = [v for v in able if v.free > 0]
    if not free:
        busy = ", ".join(f"{v.name} {v.active}/{v.max_concurrent}" for v in able)
        return [], f"every fitting runner is busy ({busy})", target
    free.sort(key=lambda v: (v.active / max(v.max_concurrent, 1), v.active, v.name))
    return free, "", target


class Lease:
    """A run's slot on a runner, held by the run's execution from its claim to its end."""

    def __init__(self, pool: RunnerPool, runner: str, run_id: int) -> None:
        self.pool = pool
        self.runner = runner
        self.run_id = run_id
        self.released = False

    def step(self, runner_run_id: str) -> None:
        """The runner-side id of the step starting (to tell it apart in the runner's report)."""
        ours = self.pool._occupancy(self.runner)
        if not self.released and self.run_id in ours.runs:
            ours.runs[self.run_id] = runner_run_id
            ours.steps.add(runner_run_id)

    def full(self) -> None:
        """The runner refused the run as full: give the slot back, and give the runner
        nothing more until its load changes."""
        self.release()
        view = self.pool.views.get(self.runner)
        if view is not None:
            view.ours.full_at = (view.reported, view.reported_runs)

    def lost(self) -> None:
        """The runner could not be reached for too long: route nothing to it until a poll
        finds it again."""
        view = self.pool.views.get(self.runner)
        if view is not None:
            view.status = RunnerStatus.UNHEALTHY.value

    def release(self) -> None:
        """The run no longer occupies the runner (idempotent)."""
        if not self.released:
            self.released = True
            ours = self.pool._occupancy(self.runner)
            ours.runs.pop(self.run_id, None)
            ours.full_at = None  # this backend's load there changed


class RunnerPool:
    def __init__(self, db: Database, cipher: Cipher, poll_interval: float = 2.0) -> None:
        self.db = db
        self.cipher = cipher
        self.poll_interval = poll_interval
        self.views: dict[str, RunnerView] = {}
        self._ours: dict[str, Occupancy] = {}
        self._clients: dict[str, tuple[RunnerConnection, RunnerClient]] = {}
        # Per runner: its stored credentials and their decryption; its last answer.
        self._decrypted: dict[str, tuple[tuple[Any, ...], RunnerConnection]] = {}
        self._answers: dict[str, Answer] = {}
        self.changed = asyncio.Event()  # set when a poll finds capacity or a new runner
        # Told the runners' clients whenever they change (the state streams follow them).
        self.on_clients: Callable[[dict[str, RunnerClient]], None] | None = None

    def _occupancy(self, name: str) -> Occupancy:
        return self._ours.setdefault(name, Occupancy())

    def lease(self, runner: str, run_id: int) -> Lease:
        """Count run `run_id` on `runner` from now until the lease is released."""
        self._occupancy(runner).runs[run_id] = ""
        return Lease(self, runner, run_id)

    def clients(self) -> dict[str, RunnerClient]:
        return {name: client for name, (_, client) in self._clients.items()}

    async def client_for(self, name: str) -> RunnerClient | None:
        """The client of a runner, connecting (from the registry) if needed; None when the
        runner is not registered."""
        entry = self._clients.get(name)
        if entry is not None:
            return entry[1]
        async with self.db.session() as session:
            row = await runner_store.find_runner(session, name)
            if row is None:
                return None
            connection = self._connection(row)
        return await self._connect(connection)

    async def _connect(self, connection: RunnerConnection) -> RunnerClient:
        entry = self._clients.get(connection.name)
        if entry is not None and entry[0] == connection:
            return entry[1]
        if entry is not None:
            await entry[1].close()
        client = RunnerClient.connect(connection)
        self._clients[connection.name] = (connection, client)
        self._clients_changed()
        return client

    def _clients_changed(self) -> None:
        if self.on_clients is not None:
            self.on_clients(self.clients())

    def _connection(self, row: Runner) -> RunnerConnection:
        """The row's connection, decrypted once for as long as the row's fields are the same."""
        key = (
            row.address,
            row.token_encrypted,
            row.tls_ca_pem,
            row.tls_cert_pem,
            row.tls_key_encrypted,
        )
        cached = self._decrypted.get(row.id)
        if cached is None or cached[0] != key:
            cached = key, runner_store.runner_connection(row, self.cipher)
            self._decrypted[row.id] = cached
        return cached[1]

    def _due(self, client: RunnerClient, now: float) -> bool:
        """Whether to ask this runner this pass. An idle healthy runner that answered the same
        twice is asked every `IDLE_EVERY`th pass, unless its connection dropped: a server that
        went away is still seen within a pass, and a quiet pool costs little."""
        view = self.views.get(client.name)
        if view is None or view.status != RunnerStatus.HEALTHY.value:
            return True
        busy = view.reported > 0 or bool(view.ours.runs) or view.ours.full_at is not None
        answer = self._answers.get(client.name)
        waited = answer is None or now >= answer.next_poll
        return busy or waited or not client.connected()

    async def _poll_one(self, client: RunnerClient) -> tuple[RunnerStatus, dict[str, Any] | None]:
        try:
            info = await client.info(timeout=max(self.poll_interval, 2.0))
        except RunnerUnreachable as exc:
            log.debug("runner %s: %s", client.name, exc)
            self._answers.pop(client.name, None)
            return RunnerStatus.UNHEALTHY, None
        status = RunnerStatus.DRAINING if info.draining else RunnerStatus.HEALTHY
        last = self._answers.get(client.name)
        if last is not None and last.info == info:
            last.next_poll = time.monotonic() + self.poll_interval * IDLE_EVERY
            return status, last.recorded
        data = MessageToDict(
            info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        self._answers[client.name] = Answer(info, data)  # changed: ask again next pass
        return status, data

    async def refresh(self) -> None:
        """One pass: poll the runners that are due (`_due`) and record what each said."""
        async with self.db.session() as session:
            rows = {r.id: r for r in await runner_store.list_runners(session)}
            connections = [self._connection(r) for r in rows.values()]
        gone = set(self._clients) - set(rows)
        for name in gone:
            await self._clients.pop(name)[1].close()
            self._decrypted.pop(name, None)
            self._answers.pop(name, None)
        if gone:
            self._clients_changed()
        clients = [await self._connect(c) for c in connections]
        now = time.monotonic()
        due = [c for c in clients if self._due(c, now)]
        answers = await asyncio.gather(*(self._poll_one(c) for c in due))
        if due:
            async with self.db.session() as session:
                polled = dict(zip((c.name for c in due), answers, strict=True))
                fresh = await runner_store.record_polls(session, polled, utcnow())
            for name in polled.keys() - {r.id for r in fresh}:
                rows.pop(name, None)  # removed meanwhile
            rows.update((r.id, r) for r in fresh)
        views = {}
        for row in rows.values():
            ours = self._occupancy(row.id)
            view = view_of(row, ours)
            # Forget steps that ended (a later report cannot name them again), but not
            # those in flight, which the next report may name.
            ours.steps.intersection_update(view.reported_runs | set(ours.runs.values()))
            views[row.id] = view
        before = {n: v.free for n, v in self.views.items() if v.status == "healthy"}
        self.views = views
        for name, view in views.items():
            metrics.RUNNER_UP.labels(name).set(1 if view.status == "healthy" else 0)
        if any(v.status == "healthy" and v.free > before.get(n, 0) for n, v in views.items()):
            self.changed.set()

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a poll must never stop the loop; the next one retries
                log.exception("runner poll failed")
            await asyncio.sleep(self.poll_interval)

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()
