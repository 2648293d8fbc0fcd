"""Figure 1: relay throughput, pipe -> iac-runner --stream -> runner server -> gRPC -> client.

The producer (bench/producer.py, a Python fake terraform) prints `lines` lines of 100
bytes, one write per line, as terraform does. Project: the lines/s a Python gRPC client
receives from Execute on a real runner server whose terraform is the producer, with
`packed_output` (text blocks, as the backend asks for them). Baseline, in the same run:
the same producer's pipe read line by line by a Python parent. Measurements alternate
(baseline, project, ...) `repeat` times; medians are reported.

Also reported, for information:
- Line messages: the same relay without packed_output, one `Line` per line in each
  batch (what grpcurl shows): what building a message per line costs;
- one message per line: bench/perline.py, a one-hop gRPC server that sends one message
  per line (no iac-runner, no JSON), measured over `per_line_lines` lines: the per-message
  cost of Python gRPC that batching avoids;
- a fast producer: `yes <99 bytes> | head -n lines` (a C producer that fills the pipe
  with big writes), through the same runner server, against its own pipe baseline;
- CPU seconds per 1,000,000 lines of each process on the path (the producer, iac-runner,
  the runner server, the client; the pipe's reader): where the time of the two cores goes.
  Read from /proc: the runner server's own time, and its reaped children's (iac-runner,
  which reaped the producer), less the producer's own, which it reports itself.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Row,
    execute_request,
    log,
    output_span,
    pipe_lines,
    runner_stub,
    start_runner,
    stop_process,
)

TARGET = 0.7


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of process `pid`, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stream_cpu(
    server_pid: int, stub: Any, env_vars: dict[str, str], expected: int
) -> tuple[float, int, dict[str, float]]:
    """`stream_rate`, with the CPU seconds each process took: the runner server's own, the
    producer's (as it reports it), iac-runner's (the server's reaped children less the
    producer) and this client's."""
    server0, kids0 = process_cpu(server_pid)
    client0 = time.process_time()
    report = Path(env_vars["BENCH_CPU_FILE"])
    report.unlink(missing_ok=True)
    rate, messages = stream_rate(stub, env_vars, expected)
    client = time.process_time() - client0
    server1, kids1 = process_cpu(server_pid)
    producer = float(report.read_text().split()[-1])
    spent = {
        "server": server1 - server0,
        "iac-runner": kids1 - kids0 - producer,
        "producer": producer,
        "client": client,
    }
    return rate, messages, spent


def stream_rate(
    stub: Any, env_vars: dict[str, str], expected: int, packed: bool = True
) -> tuple[float, int]:
    """Execute a run that prints `expected` lines; (lines/s received, output messages).
    Checks that every line arrives once, in order. `packed`: output as text blocks, as
    the backend asks for it; else one Line message per line, as grpcurl shows it."""
    start = time.perf_counter()
    next_seq = 1
    messages = 0
    result = None
    request = execute_request(
        command="plan", work_dir="relay", env_vars=env_vars, packed_output=packed
    )
    for event in stub.Execute(request):
        kind = event.WhichOneof("event")
        if kind == "output":
            first, count = output_span(event.output)
            if first != next_seq:
                raise RuntimeError(f"line {next_seq} expected, got {first}")
            next_seq += count
            messages += 1
        elif kind == "result":
            result = event.result
    elapsed = time.perf_counter() - start
    received = next_seq - 1
    if result is None or not result.success or received != expected:
        raise RuntimeError(f"relay run: {received}/{expected} lines, result {result}")
    return received / elapsed, messages


def pipe_rate(
    ctx: Context, env_vars: dict[str, str], expected: int
) -> tuple[float, dict[str, float]]:
    """Lines/s of the baseline, and the CPU seconds of its producer and its reader."""
    producer0, reader0 = children_cpu(), time.process_time()
    count, seconds = pipe_lines([ctx.producer, "plan"], {**ctx.env, **env_vars}, ctx.tmp)
    cpu = {"producer": children_cpu() - producer0, "reader": time.process_time() - reader0}
    if count != expected:
        raise RuntimeError(f"pipe baseline read {count}/{expected} lines")
    return count / seconds, cpu


def paired(
    ctx: Context,
    server_pid: int,
    stub: Any,
    env_vars: dict[str, str],
    n: int,
    line_messages: bool = False,
) -> dict[str, Any]:
    """Baseline and project (and, with `line_messages`, the project sending one Line
    message per line) measured alternately; medians and every sample, and the median CPU
    seconds per 1,000,000 lines of each process."""
    pipe: list[float] = []
    relay: list[float] = []
    lines: list[float] = []
    messages: list[int] = []
    cpu: dict[str, list[float]] = {}
    measure_cpu = "BENCH_FAST" not in env_vars  # `yes | head` reports nothing
    env_vars = {**env_vars, "BENCH_CPU_FILE": str(ctx.tmp / "producer-cpu")}
    for _ in range(ctx.sizes.repeat):
        rate, pipe_cpu = pipe_rate(ctx, env_vars, n)
        pipe.append(rate)
        if measure_cpu:
            rate, count, relay_cpu = stream_cpu(server_pid, stub, env_vars, n)
            spent = {
                "pipe: producer": pipe_cpu["producer"],
                "pipe: reader": pipe_cpu["reader"],
                "producer": relay_cpu["producer"],
                "iac-runner": relay_cpu["iac-runner"],
                "runner server": relay_cpu["server"],
                "client": relay_cpu["client"],
            }
            for name, seconds in spent.items():
                cpu.setdefault(name, []).append(seconds * 1_000_000 / n)
        else:
            rate, count = stream_rate(stub, env_vars, n)
        relay.append(rate)
        messages.append(count)
        if line_messages:
            lines.append(stream_rate(stub, env_vars, n, packed=False)[0])
    return {
        "cpu_s_per_1m_lines": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "pipe": statistics.median(pipe),
        "relay": statistics.median(relay),
        "line_messages": statistics.median(lines) if lines else 0.0,
        "pipe_samples": [round(x) for x in pipe],
        "relay_samples": [round(x) for x in relay],
        "line_message_samples": [round(x) for x in lines],
        "lines_per_message": round(n / statistics.median(messages), 1),
    }


def per_line_rate(ctx: Context, n: int) -> float:
    """Lines/s through bench/perline.py, one gRPC message per line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.perline", ctx.producer],
        env={**ctx.env, "PYTHONPATH": str(ctx.root)},
        stdout=subprocess.PIPE,
        cwd=ctx.root,
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            rate, _ = stream_rate(runner_stub(channel), {"BENCH_LINES": str(n)}, n)
        return rate
    finally:
        stop_process(proc)


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.lines
    server = start_runner(ctx.tmp, ctx.env, "relay", tool=ctx.producer)
    try:
        with server.channel() as channel:
            stub = runner_stub(channel)
            log(f"relay: {n:,} lines, producer -> pipe vs runner server, x{ctx.sizes.repeat}")
            pid = server.proc.pid
            slow = paired(ctx, pid, stub, {"BENCH_LINES": str(n)}, n, line_messages=True)
            log(f"relay: CPU s per 1,000,000 lines: {slow['cpu_s_per_1m_lines']}")
            log(f"relay: fast producer (yes | head -n {n})")
            fast = paired(ctx, pid, stub, {"BENCH_LINES": str(n), "BENCH_FAST": "1"}, n)
    finally:
        server.stop()
    per_line_n = ctx.sizes.per_line_lines
    log(f"relay: one message per line, {per_line_n:,} lines")
    per_line = per_line_rate(ctx, per_line_n)
    ctx.shared["relay_rate"] = slow["relay"]
    return [
        Row(
            "1",
            "relay, 1 write per line",
            "lines/s",
            slow["relay"],
            slow["pipe"],
            target=f">= {TARGET}x",
            ok=slow["relay"] >= TARGET * slow["pipe"],
            details={"lines": n, **slow},
        ),
        Row(
            "1",
            "relay, Line messages (grpcurl's form)",
            "lines/s",
            slow["line_messages"],
            slow["pipe"],
            details={"lines": n, "packed_output": False},
        ),
        Row(
            "1",
            "relay, 1 gRPC message per line",
            "lines/s",
            per_line,
            slow["pipe"],
            details={"lines": per_line_n, "server": "bench/perline.py (one hop, no batching)"},
        ),
        Row(
            "1",
            "relay, fast producer (yes|head)",
            "lines/s",
            fast["relay"],
            fast["pipe"],
            details={"lines": n, **fast},
        ),
    ]
