"""Figure 4: peak memory while one run prints `lines` lines to 3 live followers and 2
plain downloads.

A backend plan run on a runner server whose terraform is the producer (100-byte lines,
one write per line), with 3 SSE followers attached from the start, each its own process
(`python -m bench.memory URL RUN_ID`, as 3 separate clients would be); each must
receive every line once, in order. Two more processes (`python -m bench.memory URL RUN_ID
download LINES`) download the plain log (`GET /runs/{id}/logs`, the web page's Download)
at once when half the lines are stored, the run going on, and again after its end, each
download checked whole (as many lines as its X-Last-Seq; the last one all of them). A fresh runner
server and backend (SQLite) per size, so each peak is that run's. Peak RSS is VmHWM from
/proc/<pid>/status (the kernel's high-water mark), polled every 10 ms, for the runner
server, the backend, and every `iac-runner` the runner server started (the largest is
reported); the RSS of each server before the run ("idle") is in the details.
Measured at `memory_small` lines too: the baseline column, to show the peak is flat in
the number of lines. Target: each < 100 MB, and flat (at most 1.1x the small size's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.common import (
    API_TOKEN,
    Context,
    PeakWatcher,
    Row,
    log,
    read_status_kb,
    register,
    sqlite_url,
    start_backend,
    start_runner,
    wait_run,
)

FOLLOWERS = 3
DOWNLOADS = 2
TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
LIMIT_MB = 100.0
FLAT_FACTOR = 1.1


def follow(url: str, run_id: int) -> dict[str, object]:
    """Read a run's SSE log to its end, checking that every seq comes once, in order."""
    lines = 0
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    logs = f"{url}/api/v1/runs/{run_id}/logs"
    try:
        with httpx.stream(
            "GET", logs, params={"follow": "true"}, headers=headers, timeout=600
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event: end"):
                    return {"lines": lines}
                if line.startswith('data: {"seq"'):
                    batch = json.loads(line[6:])
                    if batch["seq"] != lines + 1:
                        return {"lines": lines, "error": f"seq {batch['seq']} after {lines}"}
                    lines += batch["text"].count("\n") + 1
    except httpx.HTTPError as exc:
        return {"lines": lines, "error": repr(exc)}
    return {"lines": lines, "error": "the stream ended without an end event"}


def download(url: str, run_id: int, lines: int) -> dict[str, object]:
    """Download a run's plain log once when it has stored half its `lines` (the run going
    on), and once after its end; each download must hold as many lines as its X-Last-Seq
    says, the last one all `lines`."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    api = f"{url}/api/v1/runs/{run_id}"
    got: list[int] = []
    try:
        with httpx.Client(headers=headers, timeout=600) as http:
            for ready in (lambda r: r["last_seq"] >= lines // 2, lambda r: r["status"] in TERMINAL):
                while True:
                    run = http.get(api).json()
                    if ready(run) or run["status"] in TERMINAL:
                        break
                    time.sleep(0.2)
                count = 0
                with http.stream("GET", api + "/logs") as response:
                    for piece in response.iter_bytes():
                        count += piece.count(b"\n")
                    expected = int(response.headers["x-last-seq"])
                if count != expected:
                    return {"downloads": got, "error": f"{count} lines, X-Last-Seq {expected}"}
                got.append(count)
    except httpx.HTTPError as exc:
        return {"downloads": got, "error": repr(exc)}
    return {"downloads": got, "lines": got[-1]}


def start_clients(ctx: Context, url: str, run_id: int, lines: int) -> list[subprocess.Popen[str]]:
    """The SSE followers, then the plain downloaders."""
    modes: list[list[str]] = [[]] * FOLLOWERS + [["download", str(lines)]] * DOWNLOADS
    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.memory", url, str(run_id), *mode],
            cwd=ctx.root,
            env=ctx.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]


def measure(ctx: Context, lines: int) -> dict[str, Any]:
    """Peak RSS (MB) of each process for one run of `lines` lines, and the run's rate."""
    name = f"memory-{lines}"
    server = start_runner(ctx.tmp, ctx.env, name, tool=ctx.producer)
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, name), f"{name}-backend")
    followers: list[subprocess.Popen[str]] = []
    try:
        register(backend, [server])
        config = {"main.tf": "# lines from the producer\n"}
        backend.deploy("big", config, env={"BENCH_LINES": str(lines)})
        idle = {
            "runner server idle": read_status_kb(server.pid, "VmRSS") / 1024,
            "backend idle": read_status_kb(backend.pid, "VmRSS") / 1024,
        }
        roots = {"runner server": server.pid, "backend": backend.pid}
        with PeakWatcher(roots, [server.pid]) as watcher:
            start = time.perf_counter()
            run = backend.start("big", "plan")
            followers = start_clients(ctx, backend.url, run["id"], lines)
            done = wait_run(backend, run["id"], interval=0.2)
            elapsed = time.perf_counter() - start
            outputs = [f.communicate(timeout=600)[0] for f in followers]
        if done["status"] != "succeeded":
            raise RuntimeError(f"memory run: {done['status']} {done['error_msg']}")
        for out in outputs:
            got = json.loads(out)
            if got.get("error") or got["lines"] < lines:
                raise RuntimeError(f"a follower or downloader got {got}, of {lines} lines")
        peaks = {k: v / 1024 for k, v in watcher.peaks_kb.items()}
        downloads = [n for out in outputs for n in json.loads(out).get("downloads", [])]
        return {**peaks, **idle, "lines_per_s": lines / elapsed, "downloads": downloads}
    finally:
        for f in followers:
            if f.poll() is None:
                f.kill()
                f.wait()
        backend.stop()
        server.stop()


def run(ctx: Context) -> list[Row]:
    big, small = ctx.sizes.lines, ctx.sizes.memory_small
    log(
        f"memory: {small:,} then {big:,} lines, backend run with {FOLLOWERS} SSE followers "
        f"and {DOWNLOADS} plain downloaders"
    )
    at_small = measure(ctx, small)
    at_big = measure(ctx, big)
    rows = []
    for process in ("iac-runner", "runner server", "backend"):
        peak, base = at_big[process], at_small[process]
        idle = at_big.get(f"{process} idle")
        rows.append(
            Row(
                "4",
                f"peak RSS {process}, {big:,} lines",
                "MB",
                peak,
                base,
                target=f"< {LIMIT_MB:.0f} MB, <= {FLAT_FACTOR}x",
                ok=peak < LIMIT_MB and peak <= FLAT_FACTOR * base,
                details={
                    "baseline": f"the same at {small:,} lines",
                    "plain_downloads_lines": at_big["downloads"],
                    **({"idle_rss_mb": round(idle, 1)} if idle else {}),
                },
            )
        )
    rows.append(
        Row(
            "4",
            f"backend run, {FOLLOWERS} SSE followers, {DOWNLOADS} downloads",
            "lines/s",
            at_big["lines_per_s"],
            ctx.shared.get("relay_rate"),
            details={"baseline": "figure 1's relay (runner server -> one gRPC client)"},
        )
    )
    return rows


if __name__ == "__main__":
    if sys.argv[3:4] == ["download"]:
        print(json.dumps(download(sys.argv[1], int(sys.argv[2]), int(sys.argv[4]))))
    else:
        print(json.dumps(follow(sys.argv[1], int(sys.argv[2]))))
