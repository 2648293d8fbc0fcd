"""Load: many short runs on three runners, and a slow log follower.

Every run prints a known sequence of lines from a local-exec loop; every line must arrive
exactly once in the store and at an SSE follower, no run may be left behind, and the
runner servers must end with the file descriptors and child processes they started with.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.backend.platform import start_backend
from tests.conftest import skip_unless_strict, wait_for
from tests.procs import RunnerProcess
from tests.reliability.harness import (
    SOAK,
    Counter,
    Follower,
    Footprint,
    SlowReader,
    lines_config,
    metric,
    rss_bytes,
    run_lines_once,
    size,
    start_server,
)

TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
RUNNERS = 3
MAX_CONCURRENT = 8


@pytest.fixture(params=["sqlite", "postgresql"] if SOAK else ["sqlite"])
def load_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite (both profiles) and, in the soak profile, a fresh database on the shared
    PostgreSQL server (never restarted here)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'iac.db'}"
        return
    from tests.backend.conftest import PgServer, _pg_admin

    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:
        skip_unless_strict(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    server = PgServer()
    try:
        yield server.create_database()
    finally:
        server.drop_all()


def _max_overlap(server: RunnerProcess) -> int:
    """The most runs a runner server had at once, from its run_start/run_end log lines."""
    active = peak = 0
    for line in server.log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line).get("event")
        if event == "run_start":
            active += 1
            peak = max(peak, active)
        elif event == "run_end":
            active -= 1
    return peak


def test_many_short_runs_on_three_runners_lose_nothing_and_leak_nothing(
    rel_env: dict[str, str], tmp_path: Path, load_db: str
) -> None:
    runs_n, lines_n = size(40, 200), size(20, 50)
    servers = [
        start_server(tmp_path, rel_env, f"load-{i}", "--max-concurrent", str(MAX_CONCURRENT))
        for i in range(RUNNERS)
    ]
    backend = start_backend(tmp_path, rel_env, load_db)
    try:
        for server in servers:
            backend.register(server.name, server.address)
        backend.wait_runners_healthy(*(s.name for s in servers))
        before = {s.name: Footprint.of(s.proc.pid) for s in servers}

        runs: list[dict[str, Any]] = []
        followers: list[Follower] = []
        for i in range(runs_n):
            backend.deploy(f"load-{i}", {"main.tf": lines_config(f"load{i}", lines_n)})
        started = time.monotonic()
        for i in range(runs_n):
            run = backend.start(f"load-{i}", "apply", auto_approve=True)
            runs.append(run)
            followers.append(Follower(backend, run["id"]).start())
        done = [backend.wait(r["id"], *TERMINAL, timeout=size(600, 1800)) for r in runs]
        took = time.monotonic() - started

        assert [r["status"] for r in done] == ["succeeded"] * runs_n, [
            (r["id"], r["status"], r["error_msg"]) for r in done if r["status"] != "succeeded"
        ]
        for status in ("queued", "running", "applying", "awaiting_approval"):
            assert backend.call("GET", "/runs", 200, params={"status": status}) == []
        for i, (run, follower) in enumerate(zip(done, followers, strict=True)):
            stored = run_lines_once(backend, run, f"load{i}", lines_n)
            follower.join()
            follower.check(stored)
        used = {r["runner_id"] for r in done}
        assert used == {s.name for s in servers}, used
        for server in servers:
            assert _max_overlap(server) <= MAX_CONCURRENT

        # No leak: each runner server is back to its file descriptors and child processes
        # (the one spare iac-runner) once the runs are over.
        for server in servers:
            baseline = before[server.name]

            def settled(server: RunnerProcess = server, baseline: Footprint = baseline) -> bool:
                return Footprint.of(server.proc.pid).within(baseline)

            try:
                wait_for(settled, 30)
            except AssertionError:
                now = Footprint.of(server.proc.pid)
                raise AssertionError(
                    f"{server.name}: fds {len(baseline.fds)} -> {len(now.fds)}, children "
                    f"{baseline.children} -> {now.children}; fds now: {now.fds}"
                ) from None
            assert "Traceback" not in server.log.read_text()
        # Every deploy, upload and run start is in the audit log, and the chain holds.
        verdict = backend.call("GET", "/audit/verify", 200)
        assert verdict["ok"] and verdict["entries"] >= 3 * runs_n, verdict
        Counter.add("load runs", runs_n)
        print(f"{runs_n} runs of {lines_n} lines on {RUNNERS} runners in {took:.1f} s")
    finally:
        backend.stop()
        for server in servers:
            server.stop()


def _duration(run: dict[str, Any]) -> float:
    start = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(run["ended_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


class RssSampler:
    """The peak resident memory of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def test_a_slow_sse_follower_slows_neither_the_run_nor_other_followers(
    rel_env: dict[str, str], tmp_path: Path
) -> None:
    n, width = size(6_000, 200_000), 200
    runner = start_server(tmp_path, rel_env, "slow-runner")
    backend = start_backend(tmp_path, rel_env, f"sqlite:///{tmp_path / 'iac.db'}")
    slow: SlowReader | None = None
    try:
        backend.register("slow-runner", runner.address)
        backend.wait_runners_healthy("slow-runner")
        # The same run without the slow follower: how long it takes here and now.
        backend.deploy("base", {"main.tf": lines_config("base", n, width=width)})
        base = backend.start("base", "apply", auto_approve=True)
        base_follower = Follower(backend, base["id"]).start()
        base = backend.wait(base["id"], *TERMINAL, timeout=600)
        assert base["status"] == "succeeded", base
        base_follower.join()
        output_bytes = len(backend.log_text(base["id"]).encode())

        backend.deploy("slow", {"main.tf": lines_config("slow", n, width=width)})
        rss_before = rss_bytes(backend.proc.pid)
        sampler = RssSampler(backend.proc.pid)
        run = backend.start("slow", "apply", auto_approve=True)
        host, port = backend.url.rsplit("/", 1)[1].split(":")
        slow = SlowReader(host, int(port), f"/api/v1/runs/{run['id']}/logs?follow=true")
        fast = Follower(backend, run["id"]).start()
        run = backend.wait(run["id"], *TERMINAL, timeout=600)
        ended = time.monotonic()
        peak = sampler.stop()

        assert run["status"] == "succeeded", run
        # Were the run held back by its slow follower, it would take hours (one line per
        # second); the margin is for the load of a shared machine, not for a slowdown.
        assert _duration(run) < 3 * _duration(base) + 30, (_duration(run), _duration(base))
        fast.join()
        assert fast.ended - ended < 10, "the fast follower lagged behind the run"
        fast.check(run_lines_once(backend, run, "slow", n))
        # The slow reader is still there, a few lines in: it held nobody up.
        assert slow.thread.is_alive() and len(slow.lines) < 100, len(slow.lines)
        # What a slow follower costs the backend is bounded (a queue it is dropped from),
        # not the size of the output it has not read.
        grown = peak - rss_before
        print(
            f"output {output_bytes / 2**20:.1f} MiB, backend RSS {rss_before / 2**20:.0f} MiB "
            f"-> peak {peak / 2**20:.0f} MiB; run {_duration(run):.1f} s (alone "
            f"{_duration(base):.1f} s)"
        )
        assert grown < 48 * 2**20, (grown, output_bytes)
        slow.close()
        slow = None
        wait_for(lambda: metric(backend, "iac_active_log_streams") == 0, timeout=30)
    finally:
        if slow is not None:
            slow.close()
        backend.stop()
        runner.stop()
