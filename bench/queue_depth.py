"""Figure 9: what a deep queue costs a dispatch.

A backend (SQLite; and PostgreSQL unless --no-postgres) with one runner server (real
terraform) and `depth` runs that wait, 10 per deployment, written straight to its
database (as if they had waited a while, each with its reason): half the deployments
require the labels of a pool that is not there (provider=offline), half hold a run
awaiting approval that the others queue behind. Then `samples` plans of an empty
configuration on a deployment of its own, one after the other, each behind the whole
queue in queue order. Measured: the time from its POST to its claim (`started_at` -
`created_at`, the backend's clock), p50; and the backend's CPU time (user + system, from
/proc) over those runs, per run: the passes the dispatcher makes meanwhile, its regular
ones included, are counted in it.
Project: 10,000 waiting; baseline: 100 waiting, same run (`queue_depths`). Target: both
at most 1.2x. The details carry the plan each database makes of the dispatcher's queries.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text, update

from backend.db import Database
from backend.models import ConfigVersion, RunStatus
from backend.store import queue
from bench.common import (
    EMPTY_CONFIG,
    Backend,
    Context,
    Row,
    cpu_seconds,
    log,
    percentile,
    postgres_database,
    register,
    sqlite_url,
    start_backend,
    start_runner,
    wait_run,
)

PER_DEPLOYMENT = 10
TARGET = 1.2
DEPLOYMENTS = queue.DEPLOYMENTS
CONFIGS = cast(Table, ConfigVersion.__table__)


async def _copies(db: Database, template: str, count: int, held: bool) -> None:
    """`count` deployments like `template` (with its configuration), each with
    PER_DEPLOYMENT queued runs like the template's run (and, when `held`, a run awaiting
    approval before them)."""
    if count < 1:
        raise ValueError("a queue depth of at least 2 * PER_DEPLOYMENT")
    async with db.session() as s:
        row = (
            (await s.execute(select(DEPLOYMENTS).where(DEPLOYMENTS.c.name == template)))
            .mappings()
            .one()
        )
        config = (
            (await s.execute(select(CONFIGS).where(CONFIGS.c.deployment_id == row["id"])))
            .mappings()
            .one()
        )
        run = await s.execute(select(queue.RUNS).where(queue.R.deployment_id == row["id"]))
        run_row = dict(run.mappings().one())
        await s.execute(_retire(row["id"]))
        names = [f"{template}-{i}" for i in range(count)]
        await s.execute(insert(DEPLOYMENTS), [{**_fresh(row), "name": name} for name in names])
        ids = dict(
            (await s.execute(select(DEPLOYMENTS.c.name, DEPLOYMENTS.c.id).where(
                DEPLOYMENTS.c.name.in_(names)
            ))).tuples().all()
        )  # fmt: skip
        await s.execute(
            insert(CONFIGS), [{**_fresh(config), "deployment_id": ids[n]} for n in names]
        )
        configs = dict(
            (await s.execute(select(CONFIGS.c.deployment_id, CONFIGS.c.id).where(
                CONFIGS.c.deployment_id.in_(ids.values())
            ))).tuples().all()
        )  # fmt: skip
        # The reasons the dispatcher gives (their numbers aside): it has nothing to write.
        head = (
            "waiting for run 0 (awaiting_approval) of this deployment"
            if held
            else "no registered runner has the labels provider=offline"
        )
        behind = "waiting for run 0 (queued before it) of this deployment"
        runs: list[dict[str, Any]] = []
        for name in names:
            place = {"deployment_id": ids[name], "config_version_id": configs[ids[name]]}
            if held:
                runs.append({**_fresh(run_row), **place, "status": "awaiting_approval"})
            runs.append({**_fresh(run_row), **place, "wait_reason": head})
            runs += [{**_fresh(run_row), **place, "wait_reason": behind}] * (PER_DEPLOYMENT - 1)
        await s.execute(insert(queue.RUNS), runs)


def _retire(deployment_id: int) -> Any:
    """The template's own run, once copied, is no part of the queue."""
    return (
        update(queue.RUNS)
        .where(queue.R.deployment_id == deployment_id)
        .values(status=RunStatus.CANCELED.value)
    )


def _fresh(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k != "id"}


async def _seed(url: str, depth: int) -> int:
    db = Database(url)
    try:
        deployments = depth // PER_DEPLOYMENT
        await _copies(db, "offline", deployments // 2, held=False)
        await _copies(db, "held", deployments - deployments // 2, held=True)
        if db.engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of such growth (autovacuum_naptime): a
            # planner that knows the table's size reads the queue in index order.
            async with db.engine.connect() as conn:
                await conn.execute(text("ANALYZE runs"))
                await conn.execute(text("ANALYZE deployments"))
                await conn.commit()
        async with db.session() as s:
            count = await s.scalar(
                select(func.count()).where(queue.R.status == RunStatus.QUEUED.value)
            )
        return int(count or 0)
    finally:
        await db.dispose()


async def _plans(url: str) -> dict[str, str]:
    """The plan the database makes of a regular and a full pass's queries."""
    db = Database(url)
    try:
        dialect = db.engine.dialect
        explain = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
        plans = {}
        for name, queries in (
            ("new", queue.waiting("queued", limit=64, new_only=True)),
            ("first", queue.waiting("queued", limit=64)),
            ("resumed", queue.waiting("queued", limit=500, after=(0, 1))),
        ):
            for i, query in enumerate(queries):
                sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
                async with db.session() as s:
                    rows = (await s.execute(text(explain + sql))).all()
                plans[f"{name} {i + 1}"] = " | ".join(str(r[-1]) for r in rows)
        return plans
    finally:
        await db.dispose()


def _measure(backend: Backend, samples: int) -> tuple[list[float], float]:
    """(ms from POST to claim of each plan, backend CPU seconds per plan)."""
    for _ in range(2):  # warm-up: terraform's plugin cache, the first connections
        wait_run(backend, backend.start("probe", "plan")["id"])
    waits = []
    cpu0 = cpu_seconds(backend.pid)
    for _ in range(samples):
        run = wait_run(backend, backend.start("probe", "plan")["id"])
        if run["status"] != "succeeded":
            raise RuntimeError(f"probe run {run['id']} {run['status']}: {run['error_msg']}")
        waits.append(_elapsed_ms(run["created_at"], run["started_at"]))
    return waits, (cpu_seconds(backend.pid) - cpu0) / samples


def _elapsed_ms(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def point(ctx: Context, url: str, depth: int, tag: str) -> dict[str, Any]:
    with ExitStack() as stack:
        server = start_runner(ctx.tmp, ctx.env, f"{tag}-r")
        stack.callback(server.stop)
        backend = start_backend(ctx.tmp, ctx.env, url, tag)
        stack.callback(backend.stop)
        labels = {"provider": "offline"}
        backend.deploy("offline", {"main.tf": EMPTY_CONFIG}, required_labels=labels)
        backend.deploy("held", {"main.tf": EMPTY_CONFIG})
        for name in ("offline", "held"):
            backend.start(name, "plan")  # the template of the waiting runs
        backend.deploy("probe", {"main.tf": EMPTY_CONFIG})
        queued = asyncio.run(_seed(url, depth))
        register(backend, [server])
        started = time.monotonic()
        waits, cpu = _measure(backend, ctx.sizes.queue_samples)
        log(f"queue depth {depth} ({tag}): {time.monotonic() - started:.1f} s")
        return {
            "queued": queued,
            "claim_ms": waits,
            "cpu_ms": cpu * 1000,
            "plans": asyncio.run(_plans(url)),
        }


def rows_for(deep: dict[str, Any], shallow: dict[str, Any], where: str) -> list[Row]:
    p50, b50 = percentile(deep["claim_ms"], 0.5), percentile(shallow["claim_ms"], 0.5)
    versus = f"{deep['queued']} vs {shallow['queued']} waiting"
    common = {"queued": [deep["queued"], shallow["queued"]], "plans": deep["plans"]}
    return [
        Row(
            "9",
            f"POST -> claim p50, {versus}, {where}",
            "ms",
            p50,
            b50,
            target=f"<= {TARGET}x",
            ok=p50 <= TARGET * b50,
            details={**common, "project_ms": deep["claim_ms"], "baseline_ms": shallow["claim_ms"]},
        ),
        Row(
            "9",
            f"backend CPU per run, {versus}, {where}",
            "ms",
            deep["cpu_ms"],
            shallow["cpu_ms"],
            target=f"<= {TARGET}x",
            ok=deep["cpu_ms"] <= TARGET * shallow["cpu_ms"],
            details=common,
        ),
    ]


def run(ctx: Context) -> list[Row]:
    shallow, deep = ctx.sizes.queue_depths
    log(f"queue depth: {ctx.sizes.queue_samples} plans behind {shallow}, then {deep} waiting")
    rows = []
    for where in ("SQLite", "PostgreSQL") if ctx.postgres else ("SQLite",):
        found = {}
        for depth in (shallow, deep):
            tag = f"queue-{where.lower()}-{depth}"
            if where == "SQLite":
                found[depth] = point(ctx, sqlite_url(ctx.tmp, tag), depth, tag)
            else:
                with postgres_database() as url:
                    found[depth] = point(ctx, url, depth, tag)
        rows += rows_for(found[deep], found[shallow], where)
    return rows
