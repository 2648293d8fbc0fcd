"""Prometheus metrics of the runner server."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS_STARTED = Counter("iac_runner_runs_started", "Runs started", ["tool", "command"])
RUNS_FINISHED = Counter("iac_runner_runs_finished", "Runs finished", ["tool", "command", "outcome"])
RUN_DURATION = Histogram(
    "iac_runner_run_duration_seconds",
    "Run duration",
    ["tool", "command"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600),
)
ACTIVE_RUNS = Gauge("iac_runner_active_runs", "Runs in progress")
LINES_STREAMED = Counter("iac_runner_lines_streamed", "Output lines relayed")
BYTES_STREAMED = Counter("iac_runner_bytes_streamed", "Output bytes relayed (NDJSON)")
