"""Figure 5: 8 simultaneous streaming runs on one runner server (max_concurrent 8).

Project: total lines/s of 8 Executes started together, each printing lines/8 lines, read
by one asyncio gRPC client (this process). Baseline: one run alone printing `lines`
lines, read by the same client; the same total work. Every stream must deliver every
line once, in order (no lost line). Alternating, `repeat` times, medians. Target >= 0.8.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.common import (
    Context,
    Row,
    execute_request,
    log,
    output_span,
    runner_stub,
    start_runner,
)

RUNS = 8
TARGET = 0.8


async def stream(stub: Any, run_id: str, lines: int) -> int:
    """Read one run to its result; the number of lines, each checked in order."""
    next_seq = 1
    result = None
    request = execute_request(
        run_id=run_id,
        command="plan",
        work_dir=run_id,
        env_vars={"BENCH_LINES": str(lines)},
        packed_output=True,
    )
    async for event in stub.Execute(request):
        kind = event.WhichOneof("event")
        if kind == "output":
            first, count = output_span(event.output)
            if first != next_seq:
                raise RuntimeError(f"{run_id}: line {next_seq} expected, got {first}")
            next_seq += count
        elif kind == "result":
            result = event.result
    if result is None or not result.success or next_seq - 1 != lines:
        raise RuntimeError(f"{run_id}: {next_seq - 1}/{lines} lines, result {result}")
    return next_seq - 1


async def total_rate(address: str, runs: int, lines_each: int, tag: str) -> float:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = runner_stub(channel)
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(stream(stub, f"{tag}-{i}", lines_each) for i in range(runs))
        )
        return sum(counts) / (time.perf_counter() - start)


def run(ctx: Context) -> list[Row]:
    total = ctx.sizes.lines
    each = total // RUNS
    server = start_runner(
        ctx.tmp, ctx.env, "concurrency", "--max-concurrent", str(RUNS), tool=ctx.producer
    )
    alone: list[float] = []
    together: list[float] = []
    try:
        log(
            f"concurrency: 1 run of {total:,} lines vs {RUNS} runs of {each:,}, x{ctx.sizes.repeat}"
        )
        for i in range(ctx.sizes.repeat):
            alone.append(asyncio.run(total_rate(server.address, 1, total, f"alone{i}")))
            together.append(asyncio.run(total_rate(server.address, RUNS, each, f"eight{i}")))
    finally:
        server.stop()
    project, baseline = statistics.median(together), statistics.median(alone)
    return [
        Row(
            "5",
            f"{RUNS} concurrent runs, total",
            "lines/s",
            project,
            baseline,
            target=f">= {TARGET}x",
            ok=project >= TARGET * baseline,
            details={
                "lines_total": RUNS * each,
                "alone_samples": [round(x) for x in alone],
                "together_samples": [round(x) for x in together],
                "lost_lines": 0,
            },
        )
    ]
