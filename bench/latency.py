"""Figure 3: live latency, from a line's write by the tool to its arrival at a watcher.

The producer prints `latency_lines` lines 100 ms apart, each starting with its own
time.time() at the write (same machine, same clock); the watcher subtracts it from
time.time() on arrival. It starts printing 0.5 s after it starts, so a watcher that
attaches right after starting the run is attached before the first line.
- baseline: a Python parent reading the producer's pipe line by line;
- (a) a gRPC client of Execute on a runner server whose terraform is the producer;
- (b) an SSE follower (GET /runs/<id>/logs?follow=true) of a backend plan run on such a
  runner (the producer prints nothing special for init, then the lines for plan).
Targets: p99 < 50 ms for (a), < 100 ms for (b).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx

from bench.common import (
    API_TOKEN,
    Backend,
    Context,
    Row,
    execute_request,
    log,
    output_texts,
    percentile,
    register,
    runner_stub,
    sqlite_url,
    start_backend,
    start_runner,
    wait_run,
)

TARGET_GRPC_MS = 50.0
TARGET_SSE_MS = 100.0


def producer_env(n: int) -> dict[str, str]:
    return {
        "BENCH_LINES": str(n),
        "BENCH_EVERY": "0.1",
        "BENCH_STAMP": "1",
        "BENCH_DELAY": "0.5",
    }


def latency_ms(text: str, arrived: float) -> float | None:
    """ms since the stamp at the start of a producer line (None: not a stamped line)."""
    head = text.split(" ", 1)[0]
    try:
        return (arrived - float(head)) * 1000
    except ValueError:
        return None


def pipe_latencies(ctx: Context, n: int) -> list[float]:
    proc = subprocess.Popen(
        [ctx.producer, "plan"], env={**ctx.env, **producer_env(n)}, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    found = []
    for raw in proc.stdout:
        value = latency_ms(raw.decode(), time.time())
        if value is not None:
            found.append(value)
    proc.wait()
    return found


def grpc_latencies(stub: Any, n: int) -> list[float]:
    found = []
    request = execute_request(
        command="plan", work_dir="latency", env_vars=producer_env(n), packed_output=True
    )
    for event in stub.Execute(request):
        if event.WhichOneof("event") == "output":
            arrived = time.time()
            for text in output_texts(event.output):
                value = latency_ms(text, arrived)
                if value is not None:
                    found.append(value)
    return found


def sse_latencies(backend: Backend, deployment: str) -> list[float]:
    run = backend.start(deployment, "plan")
    found = []
    url = f"{backend.url}/api/v1/runs/{run['id']}/logs"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.stream(
        "GET", url, params={"follow": "true"}, headers=headers, timeout=30
    ) as response:
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "end":
                    break
            elif line.startswith("data: ") and event == "message":
                arrived = time.time()
                for text in json.loads(line[6:])["text"].split("\n"):
                    value = latency_ms(text, arrived)
                    if value is not None:
                        found.append(value)
            elif line == "":
                event = "message"
    done = wait_run(backend, run["id"])
    if done["status"] != "succeeded":
        raise RuntimeError(f"latency run {run['id']}: {done['status']} {done['error_msg']}")
    return found


def rows_for(figure: str, name: str, values: list[float], base: list[float], target: float) -> Row:
    p99, b99 = percentile(values, 0.99), percentile(base, 0.99)
    return Row(
        figure,
        f"{name} p99",
        "ms",
        p99,
        b99,
        compare=f"{p99 - b99:+.1f} ms",
        target=f"< {target:.0f} ms",
        ok=p99 < target,
        details={
            "p50_ms": round(percentile(values, 0.5), 2),
            "max_ms": round(max(values), 2),
            "lines": len(values),
            "baseline_p50_ms": round(percentile(base, 0.5), 2),
        },
    )


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.latency_lines
    log(f"latency: {n} lines 100 ms apart: pipe, gRPC client, SSE follower")
    base = pipe_latencies(ctx, n)
    server = start_runner(ctx.tmp, ctx.env, "latency", tool=ctx.producer)
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, "latency"), "latency-backend")
    try:
        with server.channel() as channel:
            via_grpc = grpc_latencies(runner_stub(channel), n)
        register(backend, [server])
        backend.deploy("ticker", {"main.tf": "# lines from the producer\n"}, env=producer_env(n))
        via_sse = sse_latencies(backend, "ticker")
    finally:
        backend.stop()
        server.stop()
    for name, values in (("gRPC", via_grpc), ("SSE", via_sse)):
        if len(values) != n:
            raise RuntimeError(f"latency: {name} watcher got {len(values)}/{n} stamped lines")
    return [
        rows_for("3a", "live line -> gRPC client", via_grpc, base, TARGET_GRPC_MS),
        rows_for("3b", "live line -> SSE follower", via_sse, base, TARGET_SSE_MS),
    ]
