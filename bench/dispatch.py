"""Figure 6: dispatch of queued short runs over a pool of runner servers.

The work: `runs` no-op plans with real terraform, the backend's cheapest run (a plan of
a configuration with no resources: init with the archive, plan -out=tfplan, and
show -json tfplan for the review).
- project: one deployment per run on a fresh backend (SQLite), `runs` POST /runs sent
  as fast as the API takes them (8 in flight), until the last run has ended (its
  `ended_at`, the backend's own clock): runs/s.
- baseline: a simple client (this process, asyncio gRPC) feeding the same three Executes
  per run straight to the same runner servers, as many at once as they take
  (max_concurrent each), same archive, stdout file, collect and cleanup: runs/s.
- the same on PostgreSQL with 2 backend processes sharing a fresh database
  (iac_bench_<hex>, dropped afterwards), PER_DEPLOYMENT runs of each deployment, the
  runs submitted to both alternately. Its details count the runs that started before
  an older run of their deployment (target 0: the dispatcher's per-deployment order)
  and the dispatches a full runner refused that show in a history (target 0). Its
  baseline is the SQLite row's direct client rate (the same work, on the same kind of
  pool; measuring it again would cost a minute of the 10-minute budget).
Each backend gets fresh runner servers (see `pool`), with their default max_concurrent
(4). Runs that do not succeed are counted and named in the details (a MISS whatever the
rate). Target: >= 0.8 of the baseline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import httpx

from bench.common import (
    API_TOKEN,
    EMPTY_CONFIG,
    Backend,
    Context,
    Row,
    RunnerServer,
    execute_request,
    log,
    postgres_database,
    register,
    runner_stub,
    sqlite_url,
    start_backend,
    start_runner,
    tar_gz,
)

RUNNERS = 4
MAX_CONCURRENT = 4  # the runner server's default
IN_FLIGHT = 8  # concurrent API requests while setting up and submitting
TARGET = 0.9  # one backend on SQLite
TARGET_REPLICAS = 0.85  # two backends on PostgreSQL
PLAN_ARGS = ["-out=tfplan", "-detailed-exitcode"]
ARCHIVE = tar_gz({"main.tf": EMPTY_CONFIG})
FAILED = ("failed", "canceled", "timed_out")
UNFINISHED = ("queued", "running", "awaiting_approval", "applying")  # an apply's four
PER_DEPLOYMENT = 10  # runs of one deployment in the two-backend row


@dataclass
class Point:
    runners: int
    runs: int
    backend: float = 0.0  # runs/s
    direct: float = 0.0  # runs/s
    failures: list[str] = field(default_factory=list)  # runs that did not succeed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.backend / self.direct if self.direct else 0.0


# -- the baseline: a simple client -------------------------------------------------------
async def _steps(stub: Any, work_dir: str) -> None:
    for request in (
        execute_request(command="init", work_dir=work_dir, workspace=ARCHIVE),
        execute_request(command="plan", args=PLAN_ARGS, work_dir=work_dir),
        execute_request(
            command="show", args=["-json", "tfplan"], work_dir=work_dir,
            stdout_file="tfplan.json", collect=["tfplan", "tfplan.json"], cleanup=True,
        ),
    ):  # fmt: skip
        result = None
        async for event in stub.Execute(request):
            if event.WhichOneof("event") == "result":
                result = event.result
        if result is None or not (result.success or result.exit_code == 2):
            raise RuntimeError(f"direct {request.command} in {work_dir}: {result}")


async def _direct(servers: list[RunnerServer], runs: int) -> float:
    jobs = iter(range(runs))
    channels = [grpc.aio.insecure_channel(s.address) for s in servers]
    tag = time.monotonic_ns()

    async def worker(stub: Any) -> None:
        for i in jobs:
            await _steps(stub, f"direct-{tag}-{i}")

    try:
        start = time.perf_counter()
        await asyncio.gather(
            *(worker(runner_stub(ch)) for ch in channels for _ in range(MAX_CONCURRENT))
        )
        return runs / (time.perf_counter() - start)
    finally:
        for ch in channels:
            await ch.close()


def direct_rate(servers: list[RunnerServer], runs: int) -> float:
    return asyncio.run(_direct(servers, runs))


# -- the project: queued backend runs ------------------------------------------------------
async def _each(calls: list[Any]) -> None:
    """Await the coroutine factories in `calls`, IN_FLIGHT at a time."""
    it = iter(calls)

    async def lane() -> None:
        for call in it:
            await call()

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))


def _client(backend: Backend) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=backend.url + "/api/v1",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=120,
    )


async def _check(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")


def _order(backend: Backend, runs: list[dict[str, Any]]) -> dict[str, int]:
    """Of `runs`: those that started before an older run of their deployment; dispatch
    entries beyond one per phase in the histories (a refused dispatch that left a trace)."""
    by_deployment: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_deployment.setdefault(run["deployment"], []).append(run)
    out_of_order = 0
    for group in by_deployment.values():
        latest = ""
        for run in sorted(group, key=lambda r: r["id"]):
            started = run["started_at"] or ""
            if started and started < latest:
                out_of_order += 1
            latest = max(latest, started)
    extra = 0
    for run in runs:
        events = backend.call("GET", f"/runs/{run['id']}")["events"]
        extra += max(0, sum(e["kind"] == "dispatched" for e in events) - 1)
    return {
        "out_of_order": out_of_order,
        "requeue_entries": extra,
        "deployments": len(by_deployment),
    }


async def _create_deployments(backend: Backend, runs: int, archive: bytes = ARCHIVE) -> None:
    """Deployments d0 .. d<runs - 1>, each with `archive` as its configuration."""
    async with _client(backend) as http:

        def make(i: int) -> Any:
            async def call() -> None:
                name = f"d{i}"
                await _check(await http.post("/deployments", json={"name": name}), 201)
                response = await http.post(
                    f"/deployments/{name}/config",
                    content=archive,
                    headers={"Content-Type": "application/gzip"},
                )
                await _check(response, 201)

            return call

        await _each([make(i) for i in range(runs)])


async def _submit(backends: list[Backend], runs: int, deployments: int, **fields: Any) -> float:
    """POST every run (alternating backends; run i is of deployment i % deployments);
    returns the time.time() of the first POST."""
    clients = [_client(b) for b in backends]
    lanes = itertools.cycle(clients)
    try:

        def make(i: int, http: httpx.AsyncClient) -> Any:
            async def call() -> None:
                body = {"deployment": f"d{i % deployments}", "operation": "plan", **fields}
                await _check(await http.post("/runs", json=body), 201)

            return call

        calls = [make(i, next(lanes)) for i in range(runs)]
        start = time.time()
        await _each(calls)
        return start
    finally:
        for http in clients:
            await http.aclose()


def _wait_all(
    backend: Backend, runs: int, deployments: int, timeout: float
) -> tuple[float, list[str], list[dict[str, Any]]]:
    """Wait until no run waits or executes; (the latest ended_at, the runs that did not
    succeed, every run of deployments d0 .. d<deployments - 1>)."""
    deadline = time.monotonic() + timeout
    # The rate ends at the last run's ended_at (the backend's clock), so polling seldom
    # costs nothing in the figure, while each poll is work for the backend measured.
    while any(
        backend.call("GET", "/runs", params={"status": s, "limit": 1})
        for s in UNFINISHED  # (`any` stops at the first busy one)
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still unfinished after {timeout:.0f} s")
        time.sleep(1.0)
    # Deployment by deployment: a list answer holds 1,000 runs at most.
    every = [
        run
        for i in range(deployments)
        for run in backend.call("GET", "/runs", params={"deployment": f"d{i}", "limit": 1000})
    ]
    failures = [
        f"run {r['id']} {r['status']}: {r['error_msg']}" for r in every if r["status"] in FAILED
    ]
    if failures:
        log("dispatch: runs that did not succeed: " + "; ".join(failures[:3]))
    ended = [datetime.fromisoformat(r["ended_at"]).timestamp() for r in every if r["ended_at"]]
    if len(every) != runs or not ended:
        raise RuntimeError(f"{len(every)} of {runs} runs found, {len(ended)} ended")
    return max(ended), failures, every


def backend_rate(
    ctx: Context,
    servers: list[RunnerServer],
    runs: int,
    db_url: str,
    replicas: int,
    tag: str,
    per_deployment: int = 1,
) -> tuple[float, list[str], dict[str, int]]:
    """(runs/s, runs that did not succeed, order counts) of `runs` queued plans on
    `replicas` backends, `per_deployment` runs of each deployment."""
    with serving(ctx, servers, db_url, replicas, tag) as backends:
        deployments = max(1, runs // per_deployment)
        asyncio.run(_create_deployments(backends[0], deployments))
        start = asyncio.run(_submit(backends, runs, deployments))
        end, failures, every = _wait_all(backends[0], runs, deployments, timeout=60 + runs * 2)
        return runs / (end - start), failures, _order(backends[0], every)


@contextmanager
def serving(
    ctx: Context, servers: list[RunnerServer], db_url: str, count: int, tag: str
) -> Iterator[list[Backend]]:
    """`count` backends (`<tag>-b<i>`) on one database, the runner servers registered
    through the first and healthy in each; all stopped at the end."""
    backends: list[Backend] = []
    try:
        for i in range(count):
            backends.append(start_backend(ctx.tmp, ctx.env, db_url, f"{tag}-b{i}"))
        register(backends[0], servers)
        for b in backends[1:]:
            b.wait_runners_healthy(*(s.name for s in servers))
        yield backends
    finally:
        for b in backends:
            b.stop()


@contextmanager
def pool(ctx: Context, count: int, tag: str, *args: str) -> Iterator[list[RunnerServer]]:
    """`count` fresh runner servers with real terraform (`args`: more of their flags). Fresh
    for every backend: a runner keeps finished runs (for Attach) for 10 minutes, and a new
    backend database numbers its runs from 1 again, so a reused runner would refuse them
    as ALREADY_EXISTS."""
    with ThreadPoolExecutor(count) as threads:
        starting = [
            threads.submit(start_runner, ctx.tmp, ctx.env, f"{tag}-r{i}", *args)
            for i in range(count)
        ]
    servers = [f.result() for f in starting if f.exception() is None]
    try:
        if len(servers) < count:
            problem = next(f.exception() for f in starting if f.exception() is not None)
            raise RuntimeError(f"a runner server did not start: {problem}")
        yield servers
    finally:
        for server in servers:
            server.stop()


def measure(
    ctx: Context,
    runners: int,
    runs: int,
    tag: str,
    db: str = "sqlite",
    replicas: int = 1,
    direct: float = 0.0,
    per_deployment: int = 1,
) -> Point:
    """One point: the direct client (unless its rate is given), then the backend(s), on
    the same fresh runners."""
    point = Point(runners, runs)
    where = "SQLite" if db == "sqlite" else f"PostgreSQL, {replicas} backends"
    log(f"dispatch: {runs} runs over {runners} runner(s), {where}")
    with pool(ctx, runners, tag) as servers:
        point.direct = direct or direct_rate(servers, runs)
        if db == "sqlite":
            url = sqlite_url(ctx.tmp, tag)
            result = backend_rate(ctx, servers, runs, url, replicas, tag, per_deployment)
        else:
            with postgres_database() as url:
                result = backend_rate(ctx, servers, runs, url, replicas, tag, per_deployment)
        point.backend, point.failures, point.details = result
    return point


def row(point: Point, where: str, baseline: str, target: float = TARGET) -> Row:
    return Row(
        "6",
        f"{point.runs} queued runs, {point.runners} runners, {where}",
        "runs/s",
        point.backend,
        point.direct,
        target=f">= {target}x",
        ok=point.ratio >= target
        and not point.failures
        and not point.details.get("out_of_order")
        and not point.details.get("requeue_entries"),
        details={
            "baseline": baseline,
            "failed_runs": len(point.failures),
            "failures": point.failures[:5],
            **point.details,
        },
    )


def run(ctx: Context) -> list[Row]:
    runs = ctx.sizes.runs
    point = measure(ctx, RUNNERS, runs, "dispatch-sqlite")
    ctx.shared[f"dispatch:{RUNNERS}x{runs}"] = point
    rows = [row(point, "SQLite", "direct client, measured just before")]
    if ctx.postgres:
        # The direct client's work does not depend on the database: its rate is reused.
        pg = measure(ctx, RUNNERS, runs, "dispatch-pg", "postgres", 2, point.direct, PER_DEPLOYMENT)
        where = f"PG x2, {PER_DEPLOYMENT} runs per deployment"
        baseline = "the direct client rate of the SQLite row"
        rows.append(row(pg, where, baseline, TARGET_REPLICAS))
    return rows
