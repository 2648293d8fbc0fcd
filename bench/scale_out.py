"""Figure 11: scale-out, several backends on one PostgreSQL (`--large` only: it takes minutes).

- **Replicas**: `scale_out_runs` (2,000) queued no-op plans over 4 runner servers, served
  by `scale_out_backends` (3) backend processes sharing a fresh database, the runs posted
  to each in turn, 10 runs per deployment; its baseline, the same runs with one backend
  (fresh database, fresh runners). Target: at least 0.8x of one backend's runs/s, and 0
  runs executed twice, counted from what the runner servers themselves started (their
  `run_start` log events: every step of every run once), not from the database.
- **Failover**: two backends, one runner; an apply that prints `failover_lines` lines
  0.5 s apart. At its 8th line the backend executing it is SIGKILLed, with the product's
  default settings: the time until the other one has adopted the run. Target: at most
  15 s, then the run succeeds with every line once and its state stored, unlocked.
- **Runners**: the replicas at 1, 2 and 4 runners (`scale_out_per_runner` runs per
  runner): runs/s at n runners against n times the rate at 1. Target: at least 0.8 of
  linear. Beside it, the same for the direct client of figure 6 on the same runners: on
  2 cores terraform's own CPU caps the machine before 4 runners, whoever feeds them.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from datetime import datetime
from typing import Any

from backend.runner_ids import StepId
from bench.common import Backend, Context, Row, log, postgres_database, register, start_backend
from bench.dispatch import (
    FAILED,
    PER_DEPLOYMENT,
    RUNNERS,
    _create_deployments,
    _submit,
    direct_rate,
    pool,
)
from tests.reliability.harness import lines_config, tagged

RATE_TARGET = 0.8  # of one backend's runs/s
ADOPT_TARGET = 15.0  # seconds from SIGKILL to adoption
LINEAR_TARGET = 0.8  # of linear
KILL_AT_LINE = 8


def _runs_of(backend: Backend, deployments: int) -> list[dict[str, Any]]:
    """Every run, read deployment by deployment (a list answer holds 1,000 at most)."""
    return [
        run
        for i in range(deployments)
        for run in backend.call("GET", "/runs", params={"deployment": f"d{i}", "limit": 1000})
    ]


def _wait_idle(backend: Backend, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(
        backend.call("GET", "/runs", params={"status": s, "limit": 1})
        for s in ("queued", "running")
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still queued or running after {timeout:.0f} s")
        time.sleep(1.0)  # each look is work for the backends measured: seldom


def _started_twice(logs: list[list[dict[str, object]]]) -> tuple[int, int]:
    """(steps started more than once, runs started) from the runner servers' own logs."""
    steps = Counter(
        (step.run, step.phase, step.step)
        for events in logs
        for e in events
        if e.get("event") == "run_start"
        and (step := StepId.parse(str(e.get("run_id")))) is not None
    )
    return sum(n - 1 for n in steps.values()), len({run for run, _, _ in steps})


def replicas_rate(ctx: Context, runners: int, runs: int, backends: int, tag: str) -> dict[str, Any]:
    """`runs` queued plans on `backends` backends sharing a fresh PostgreSQL database and
    `runners` fresh runner servers: runs/s, failures, steps started twice."""
    deployments = max(1, runs // PER_DEPLOYMENT)
    log(f"scale-out: {runs} runs, {backends} backend(s), {runners} runner(s)")
    with pool(ctx, runners, tag) as servers, postgres_database() as url:
        started: list[Backend] = []
        try:
            for i in range(backends):
                started.append(start_backend(ctx.tmp, ctx.env, url, f"{tag}-b{i}"))
            register(started[0], servers)
            for b in started[1:]:
                b.wait_runners_healthy(*(s.name for s in servers))
            asyncio.run(_create_deployments(started[0], deployments))
            start = asyncio.run(_submit(started, runs, deployments))
            _wait_idle(started[0], timeout=120 + runs * 2)
            every = _runs_of(started[0], deployments)
        finally:
            for b in started:
                b.stop()
        doubled, runs_started = _started_twice([s.log_events() for s in servers])
    failures = [
        f"run {r['id']} {r['status']}: {r['error_msg']}" for r in every if r["status"] in FAILED
    ]
    ended = [datetime.fromisoformat(r["ended_at"]).timestamp() for r in every if r["ended_at"]]
    if len(every) != runs or not ended:
        raise RuntimeError(f"{len(every)} of {runs} runs found, {len(ended)} ended")
    return {
        "rate": runs / (max(ended) - start),
        "failures": failures,
        "doubled": doubled,
        "runs_started": runs_started,
    }


def _executor(run: dict[str, Any]) -> str:
    last = [e for e in run["events"] if e["kind"] in ("dispatched", "adopted")][-1]
    return re.search(r"by (?:backend )?(\S+)", last["message"]).group(1)  # type: ignore[union-attr]


def failover(ctx: Context, lines: int) -> dict[str, Any]:
    """Kill the backend executing an apply at its KILL_AT_LINE-th line: seconds until the
    other adopts the run, and what the run kept."""
    log(f"scale-out: failover of an apply of {lines} lines, 2 backends")
    with pool(ctx, 1, "failover") as servers, postgres_database() as url:
        backends = {n: start_backend(ctx.tmp, ctx.env, url, f"failover-{n}") for n in ("b0", "b1")}
        try:
            first = backends["b0"]
            register(first, servers)
            backends["b1"].wait_runners_healthy(servers[0].name)
            config = lines_config("fo", lines, "0.5") + 'output "made" {\n  value = "yes"\n}\n'
            first.deploy("fo", {"main.tf": config})
            run = first.start("fo", "apply", auto_approve=True)
            deadline = time.monotonic() + 120
            while KILL_AT_LINE not in tagged(first.log_text(run["id"]).splitlines(), "fo"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run['id']} printed no line {KILL_AT_LINE}")
                time.sleep(0.1)
            victim = _executor(first.run(run["id"])).removeprefix("failover-")
            survivor = backends["b1" if victim == "b0" else "b0"]
            backends.pop(victim).stop(signal.SIGKILL)
            killed = time.monotonic()
            while not any(e["kind"] == "adopted" for e in survivor.run(run["id"])["events"]):
                if time.monotonic() > killed + 120:
                    raise RuntimeError(f"run {run['id']} not adopted within 120 s")
                time.sleep(0.1)
            adopted = time.monotonic() - killed
            done = survivor.wait(run["id"], "succeeded", "failed", "canceled", timeout=300)
            numbers = tagged(survivor.log_text(run["id"]).splitlines(), "fo")
            state = survivor.call("GET", "/deployments/fo/state", 200)
            versions = state["versions"]
            kept = bool(versions) and versions[0]["run_id"] == run["id"]
        finally:
            for b in backends.values():
                b.stop()
    return {
        "adopted_s": adopted,
        "status": done["status"],
        "every_line_once": numbers == list(range(1, lines + 1)),
        "state_kept": kept and not versions[0]["recovered"],
        "unlocked": state["lock"] is None,
    }


def run(ctx: Context) -> list[Row]:
    if not ctx.postgres:
        log("scale-out: skipped (--no-postgres): its backends share one PostgreSQL")
        return []
    sizes = ctx.sizes
    backends, runs = sizes.scale_out_backends, sizes.scale_out_runs
    rows: list[Row] = []
    one = replicas_rate(ctx, RUNNERS, runs, 1, "so-1b")
    many = replicas_rate(ctx, RUNNERS, runs, backends, f"so-{backends}b")
    ok = not many["failures"] and not many["doubled"] and many["runs_started"] == runs
    rows.append(
        Row(
            "11",
            f"{runs} runs, {RUNNERS} runners, {backends} backends on PG vs 1",
            "runs/s",
            many["rate"],
            one["rate"],
            target=f">= {RATE_TARGET}x, 0 twice",
            ok=ok and many["rate"] >= RATE_TARGET * one["rate"],
            details={
                "baseline": "the same runs with one backend, measured just before",
                "started_twice": many["doubled"],
                "runs_started": many["runs_started"],
                "failed_runs": len(many["failures"]),
                "failures": many["failures"][:5],
                "baseline_failed_runs": len(one["failures"]),
            },
        )
    )

    fo = failover(ctx, sizes.failover_lines)
    intact = fo["status"] == "succeeded" and fo["every_line_once"] and fo["state_kept"]
    rows.append(
        Row(
            "11",
            "backend SIGKILLed mid-apply: run adopted after",
            "s",
            fo["adopted_s"],
            None,
            target=f"<= {ADOPT_TARGET:.0f} s, intact",
            ok=fo["adopted_s"] <= ADOPT_TARGET and intact and fo["unlocked"],
            details=fo,
        )
    )

    points = []
    for n in (1, 2, 4):
        point_runs = n * sizes.scale_out_per_runner
        with pool(ctx, n, f"so-direct-{n}") as servers:
            direct = direct_rate(servers, point_runs)
        measured = replicas_rate(ctx, n, point_runs, backends, f"so-linear-{n}")
        points.append(
            {"runners": n, "runs": point_runs, "backend": measured["rate"], "direct": direct}
        )
    base, direct_base = points[0]["backend"], points[0]["direct"]
    for p in points:
        p["backend_of_linear"] = p["backend"] / (base * p["runners"])
        p["direct_of_linear"] = p["direct"] / (direct_base * p["runners"])
    worst = min(points[1:], key=lambda p: p["backend_of_linear"])
    rows.append(
        Row(
            "11",
            f"{worst['runners']} runners vs {worst['runners']} x 1 runner, {backends} backends",
            "runs/s",
            worst["backend"],
            base * worst["runners"],
            target=f">= {LINEAR_TARGET}x",
            ok=worst["backend_of_linear"] >= LINEAR_TARGET,
            details={
                "baseline": "linear: the rate at 1 runner times the runners",
                "direct_client_of_linear": round(worst["direct_of_linear"], 2),
                "points": points,
            },
        )
    )
    return rows
