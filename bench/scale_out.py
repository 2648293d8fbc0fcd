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
- **Runners**: the replicas at 1, 2 and 4 runners: runs/s at n runners against n times
  the rate at 1. Target: at least 0.8 of linear, for runs the runners limit, not the
  machine: applies that wait 3 s in a local-exec on runners of one slot each
  (`scale_out_waiting_per_runner` per runner). For information, the same with no-op plans
  (`scale_out_per_runner` per runner) beside the direct client of figure 6 on the same
  runners: on 2 cores terraform's own CPU caps such runs before 2 runners, whoever feeds
  them.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from backend.runner_ids import StepId
from bench.common import Context, Row, log, postgres_database, tar_gz
from bench.dispatch import (
    ARCHIVE,
    PER_DEPLOYMENT,
    RUNNERS,
    _create_deployments,
    _submit,
    _wait_all,
    direct_rate,
    pool,
    serving,
)
from tests.reliability.harness import lines_config, tagged


@dataclass(frozen=True)
class Work:
    """What each queued run does, and the runners that take it."""

    name: str = "no-op plans"
    archive: bytes = ARCHIVE
    fields: dict[str, Any] = field(default_factory=dict)  # of POST /runs, beside the deployment
    per_deployment: int = PER_DEPLOYMENT
    runner_args: tuple[str, ...] = ()


# An apply that waits SLEEP seconds in a local-exec, on runners of one slot each: the
# runners, not the machine's two cores, are what limits runs/s, as on a real pool.
SLEEP = 3
WAITING = Work(
    name=f"applies of a {SLEEP} s local-exec",
    archive=tar_gz(
        {
            "main.tf": 'resource "terraform_data" "wait" {\n'
            '  provisioner "local-exec" {\n'
            f'    command = "sleep {SLEEP}"\n'
            "  }\n"
            "}\n"
        }
    ),
    fields={"operation": "apply", "auto_approve": True},
    per_deployment=1,
    runner_args=("--max-concurrent", "1"),
)

RATE_TARGET = 0.8  # of one backend's runs/s
ADOPT_TARGET = 15.0  # seconds from SIGKILL to adoption
LINEAR_TARGET = 0.8  # of linear
KILL_AT_LINE = 8


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


def replicas_rate(
    ctx: Context,
    runners: int,
    runs: int,
    backends: int,
    tag: str,
    work: Work | None = None,
) -> dict[str, Any]:
    """`runs` queued runs (a no-op plan unless `work` says otherwise) on `backends` backends
    sharing a fresh PostgreSQL database and `runners` fresh runner servers: runs/s,
    failures, steps started twice."""
    work = work or Work()
    deployments = max(1, runs // work.per_deployment)
    log(f"scale-out: {runs} {work.name}, {backends} backend(s), {runners} runner(s)")
    with pool(ctx, runners, tag, *work.runner_args) as servers, postgres_database() as url:
        with serving(ctx, servers, url, backends, tag) as started:
            asyncio.run(_create_deployments(started[0], deployments, work.archive))
            start = asyncio.run(_submit(started, runs, deployments, **work.fields))
            end, failures, _ = _wait_all(started[0], runs, deployments, 120 + runs * 2)
        doubled, runs_started = _started_twice([s.log_events() for s in servers])
    return {
        "rate": runs / (end - start),
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
    with (
        pool(ctx, 1, "failover") as servers,
        postgres_database() as url,
        serving(ctx, servers, url, 2, "failover") as backends,
    ):
        first = backends[0]
        config = lines_config("fo", lines, "0.5") + 'output "made" {\n  value = "yes"\n}\n'
        first.deploy("fo", {"main.tf": config})
        run = first.start("fo", "apply", auto_approve=True)
        deadline = time.monotonic() + 120
        while KILL_AT_LINE not in tagged(first.log_text(run["id"]).splitlines(), "fo"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run['id']} printed no line {KILL_AT_LINE}")
            time.sleep(0.1)
        executing = _executor(first.run(run["id"]))
        victim = next(b for b in backends if b.env["IAC_BACKEND_ID"] == executing)
        survivor = next(b for b in backends if b is not victim)
        victim.stop(signal.SIGKILL)
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

    rows.append(_by_runners(ctx, WAITING, sizes.scale_out_waiting_per_runner, direct=False))
    rows.append(_by_runners(ctx, Work(), sizes.scale_out_per_runner, direct=True))
    return rows


def _by_runners(ctx: Context, work: Work, per_runner: int, direct: bool) -> Row:
    """Runs/s of the backends at 1, 2 and 4 runners (`per_runner` runs each), against
    linear: n times the rate at 1. With `direct`, the direct client's on the same runners
    beside it (what the machine allows whoever feeds the runners), and no target."""
    backends = ctx.sizes.scale_out_backends
    points: list[dict[str, Any]] = []
    for n in (1, 2, 4):
        runs = n * per_runner
        point: dict[str, Any] = {"runners": n, "runs": runs}
        if direct:
            with pool(ctx, n, f"so-direct-{n}") as servers:
                point["direct"] = direct_rate(servers, runs)
        tag = f"so-{'plans' if direct else 'waits'}-{n}"
        point["backend"] = replicas_rate(ctx, n, runs, backends, tag, work)["rate"]
        points.append(point)
    for p in points:
        p["backend_of_linear"] = p["backend"] / (points[0]["backend"] * p["runners"])
        if direct:
            p["direct_of_linear"] = p["direct"] / (points[0]["direct"] * p["runners"])
    worst = min(points[1:], key=lambda p: p["backend_of_linear"])
    n = worst["runners"]
    return Row(
        "11",
        f"{work.name}: {n} runners vs {n} x 1, {backends} backends",
        "runs/s",
        worst["backend"],
        points[0]["backend"] * n,
        target="-" if direct else f">= {LINEAR_TARGET}x",
        ok=None if direct else worst["backend_of_linear"] >= LINEAR_TARGET,
        details={"baseline": "linear: the rate at 1 runner times the runners", "points": points},
    )
