"""Figure 4: peak memory while one run prints `lines` lines to 3 live followers.

A backend plan run on a runner server whose terraform is the producer (100-byte lines,
one write per line), with 3 SSE followers (threads of this process) attached from the
start; each must receive every line once, in order. A fresh runner server and backend
(SQLite) per size, so each peak is that run's. Peak RSS is VmHWM from /proc/<pid>/status
(the kernel's high-water mark), polled every 10 ms, for the runner server, the backend,
and every `iac-runner` the runner server started (the largest is reported).
Measured at `memory_small` lines too: the baseline column, to show the peak is flat in
the number of lines. Target: each < 100 MB, and flat (at most 1.2x the small size's).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import httpx

from bench.common import (
    API_TOKEN,
    Backend,
    Context,
    PeakWatcher,
    Row,
    log,
    sqlite_url,
    start_backend,
    start_runner,
)

FOLLOWERS = 3
LIMIT_MB = 100.0
FLAT_FACTOR = 1.2


@dataclass
class Follower:
    lines: int = 0
    error: str = ""


def follow(backend: Backend, run_id: int, out: Follower) -> None:
    """Read the SSE log to its end, checking that every seq comes once, in order."""
    url = f"{backend.url}/api/v1/runs/{run_id}/logs"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        with httpx.stream(
            "GET", url, params={"follow": "true"}, headers=headers, timeout=600
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event: end"):
                    return
                if line.startswith('data: {"seq"'):
                    batch = json.loads(line[6:])
                    if batch["seq"] != out.lines + 1:
                        out.error = f"seq {batch['seq']} after {out.lines}"
                        return
                    out.lines += len(batch["lines"])
    except httpx.HTTPError as exc:
        out.error = repr(exc)


def measure(ctx: Context, lines: int) -> dict[str, float]:
    """Peak RSS (MB) of each process for one run of `lines` lines, and the run's rate."""
    name = f"memory-{lines}"
    server = start_runner(ctx.tmp, ctx.env, name, tool=ctx.producer)
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, name), f"{name}-backend")
    try:
        backend.register(server)
        backend.wait_healthy([server.name])
        backend.deploy(
            "big", {"main.tf": "# lines from the producer\n"}, {"BENCH_LINES": str(lines)}
        )
        roots = {"runner server": server.pid, "backend": backend.pid}
        with PeakWatcher(roots, [server.pid]) as watcher:
            start = time.perf_counter()
            run = backend.start_run("big")
            followers = [Follower() for _ in range(FOLLOWERS)]
            threads = [
                threading.Thread(target=follow, args=(backend, run["id"], f)) for f in followers
            ]
            for t in threads:
                t.start()
            done = backend.wait_run(run["id"], interval=0.2)
            elapsed = time.perf_counter() - start
            for t in threads:
                t.join(600)
        if done["status"] != "succeeded":
            raise RuntimeError(f"memory run: {done['status']} {done['error_msg']}")
        for f in followers:
            if f.error or f.lines < lines:
                raise RuntimeError(f"a follower got {f.lines}/{lines} lines: {f.error}")
        peaks = {k: v / 1024 for k, v in watcher.peaks_kb.items()}
        return {**peaks, "lines_per_s": lines / elapsed}
    finally:
        backend.stop()
        server.stop()


def run(ctx: Context) -> list[Row]:
    big, small = ctx.sizes.lines, ctx.sizes.memory_small
    log(f"memory: {small:,} then {big:,} lines, backend run with {FOLLOWERS} SSE followers")
    at_small = measure(ctx, small)
    at_big = measure(ctx, big)
    rows = []
    for process in ("iac-runner", "runner server", "backend"):
        peak, base = at_big[process], at_small[process]
        rows.append(
            Row(
                "4",
                f"peak RSS {process}, {big:,} lines",
                "MB",
                peak,
                base,
                target=f"< {LIMIT_MB:.0f} MB, <= {FLAT_FACTOR}x",
                ok=peak < LIMIT_MB and peak <= FLAT_FACTOR * base,
                details={"baseline": f"the same at {small:,} lines"},
            )
        )
    rows.append(
        Row(
            "4",
            f"backend run, {FOLLOWERS} SSE followers",
            "lines/s",
            at_big["lines_per_s"],
            ctx.shared.get("relay_rate"),
            details={"baseline": "figure 1's relay (runner server -> one gRPC client)"},
        )
    )
    return rows
