"""Figure 10: what a large idle pool costs the backend, and how soon it notices a loss.

`pool_runners` (50) runner servers, registered with one backend (SQLite, the product's
default poll interval), none of them running anything:
- the backend's CPU time (user + system, /proc) over `pool_window` (60) seconds, as a
  share of one core. Target: at most 3%. Shown beside it, the same backend's share over
  the same time before any runner was registered.
- one runner server killed (SIGKILL): the time until `GET /runners` no longer shows it
  healthy. Target: at most 15 s.
"""

from __future__ import annotations

import signal
import time

from bench.common import (
    Context,
    Row,
    cpu_seconds,
    log,
    register,
    sqlite_url,
    start_backend,
)
from bench.dispatch import pool

CPU_TARGET = 0.03  # of one core
NOTICE_TARGET = 15.0  # seconds


def _cpu_share(pid: int, seconds: float) -> float:
    start, cpu0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)  # the measurement itself: the backend alone, for this long
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - start)


def run(ctx: Context) -> list[Row]:
    count, window = ctx.sizes.pool_runners, ctx.sizes.pool_window
    log(f"pool size: {count} idle runner servers, the backend's CPU over {window:.0f} s")
    backend = start_backend(ctx.tmp, ctx.env, sqlite_url(ctx.tmp, "pool"), "pool")
    try:
        with pool(ctx, count, "pool") as servers:
            time.sleep(2.0)  # past the start-up's own work: the backend idle, as measured
            empty = _cpu_share(backend.pid, window)
            register(backend, servers, timeout=60)
            time.sleep(2.0)
            idle = _cpu_share(backend.pid, window)
            victim = servers[0]
            victim.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            deadline = killed + 60
            while backend.call("GET", f"/runners/{victim.name}")["status"] == "healthy":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"runner {victim.name} still healthy 60 s after SIGKILL")
                time.sleep(0.05)
            noticed = time.monotonic() - killed
            victim.proc.wait()
    finally:
        backend.stop()
    return [
        Row(
            "10",
            f"backend CPU, {count} idle runners",
            "% core",
            idle * 100,
            empty * 100,
            compare=f"{(idle - empty) * 100:+.1f} pt",
            target=f"<= {CPU_TARGET * 100:.0f}%",
            ok=idle <= CPU_TARGET,
            details={"window_s": window, "baseline": "the same backend with no runner"},
        ),
        Row(
            "10",
            f"SIGKILLed runner seen unhealthy, {count} runners",
            "s",
            noticed,
            None,
            target=f"<= {NOTICE_TARGET:.0f} s",
            ok=noticed <= NOTICE_TARGET,
            details={"poll": "the product's default IAC_RUNNER_POLL_INTERVAL"},
        ),
    ]
