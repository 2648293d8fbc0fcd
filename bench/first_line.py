"""Figure 8: how soon a person sees terraform's first line, on an idle pool.

Real terraform, `samples` runs of each, the variants taken in turn:
- (a) a plan: from `POST /runs` to terraform's first line (not the backend's own `==>`
  header) at an SSE follower that connects as soon as the POST answers. Baseline: from the
  start of the two Executes the plan phase begins with (init with the configuration
  archive, then plan) to the first line of init at the gRPC client: what terraform needs
  anyway.
- (b) an apply awaiting approval: from `POST /runs/{id}/approve` to the apply phase's
  first terraform line at the follower, against the same baseline.
Target: p50 at most 100 ms over the baseline's p50, for both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import (
    API_TOKEN,
    Backend,
    Context,
    Row,
    execute_request,
    log,
    percentile,
    register,
    runner_stub,
    sqlite_url,
    start_backend,
    start_runner,
    tar_gz,
    wait_run,
)

EXTRA_MS = 100.0
PAUSE = 0.05  # before each sample: the runner server's spare iac-runner is ready again
# Always one change (the input differs at every plan): an apply always awaits approval.
CHANGING = 'resource "terraform_data" "x" {\n  input = timestamp()\n}\n'
HEADER = "==> "


def first_sse_line(backend: Backend, run_id: int, after: str = "") -> float:
    """When (time.time()) the follower of run `run_id` gets terraform's first line after
    the backend's header containing `after` (any header when empty)."""
    url = f"{backend.url}/api/v1/runs/{run_id}/logs"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    seen_header = not after
    with httpx.stream("GET", url, params={"follow": "true"}, headers=headers, timeout=60) as r:
        event = "message"
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "message":
                arrived = time.time()
                for text in json.loads(line[6:])["text"].split("\n"):
                    if text.startswith(HEADER):
                        seen_header = seen_header or after in text
                    elif seen_header:
                        return arrived
            elif line == "":
                if event == "end":
                    break
                event = "message"
    raise RuntimeError(f"run {run_id}: no terraform line in its log")


def plan_first_line_ms(backend: Backend) -> float:
    start = time.time()
    run = backend.start("changing", "plan")
    arrived = first_sse_line(backend, run["id"])
    ended(backend, run["id"], "succeeded")
    return (arrived - start) * 1000


def approve_first_line_ms(backend: Backend) -> float:
    run = backend.start("changing", "apply")
    ended(backend, run["id"], "awaiting_approval")
    time.sleep(PAUSE)  # the plan phase's runner slot and spare iac-runner are free again
    start = time.time()
    backend.call("POST", f"/runs/{run['id']}/approve", 200, json={})
    arrived = first_sse_line(backend, run["id"], after="apply phase")
    ended(backend, run["id"], "succeeded")
    return (arrived - start) * 1000


def ended(backend: Backend, run_id: int, status: str) -> None:
    done = wait_run(backend, run_id, interval=0.02, stop_at=(status,))
    if done["status"] != status:
        raise RuntimeError(f"run {run_id}: {done['status']}, not {status}: {done['error_msg']}")


def execute_first_line_ms(stub: Any, archive: bytes, count: list[int]) -> float:
    """The two Executes a plan phase begins with; ms to init's first line."""
    count[0] += 1
    work_dir = f"first-{count[0]}"
    start = time.time()
    first = None
    for event in stub.Execute(
        execute_request(command="init", work_dir=work_dir, workspace=archive)
    ):
        if first is None and event.WhichOneof("event") == "output":
            first = time.time()
    for _ in stub.Execute(execute_request(command="plan", work_dir=work_dir, cleanup=True)):
        pass
    if first is None:
        raise RuntimeError("init printed nothing")
    return (first - start) * 1000


def run(ctx: Context) -> list[Row]:
    n, warm = ctx.sizes.samples, ctx.sizes.warmup
    archive = tar_gz({"main.tf": CHANGING})
    server = start_runner(ctx.tmp, ctx.env, "first-line", "--max-concurrent", "4")
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, "first-line"), "first-line")
    samples: dict[str, list[float]] = {"execute": [], "plan": [], "approve": []}
    try:
        with server.channel() as channel:
            stub = runner_stub(channel)
            register(backend, [server])
            backend.deploy("changing", {"main.tf": CHANGING})
            count = [0]
            variants: dict[str, Callable[[], float]] = {
                "execute": lambda: execute_first_line_ms(stub, archive, count),
                "plan": lambda: plan_first_line_ms(backend),
                "approve": lambda: approve_first_line_ms(backend),
            }
            log(f"first line: x{n}: 2 Executes, POST /runs, POST approve")
            for i in range(warm + n):
                for name, measure in variants.items():
                    time.sleep(PAUSE)
                    value = measure()
                    if i >= warm:
                        samples[name].append(value)
    finally:
        backend.stop()
        server.stop()
    base = samples["execute"]
    rows = []
    for key, name in (("plan", "POST /runs"), ("approve", "POST approve")):
        p50, b50 = percentile(samples[key], 0.5), percentile(base, 0.5)
        rows.append(
            Row(
                "8",
                f"first line: {name} -> SSE p50",
                "ms",
                p50,
                b50,
                compare=f"{p50 - b50:+.0f} ms",
                target=f"<= +{EXTRA_MS:.0f} ms",
                ok=p50 - b50 <= EXTRA_MS,
                details={
                    "baseline": "init's first line from Execute(init, archive), then plan",
                    "project_ms": [round(x, 1) for x in samples[key]],
                    "baseline_ms": [round(x, 1) for x in base],
                },
            )
        )
    return rows
