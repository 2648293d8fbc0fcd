"""Prometheus metrics of the backend, in the process-wide default registry.

Defined here once so the dispatcher, the runner pool and the log fan-out all update the
same series; ``/metrics`` serves them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge(
    "iac_queue_depth", "Runs waiting to be dispatched, by required labels.", ["labels"]
)
RUNS_FINISHED = Counter("iac_runs_finished_total", "Runs that ended, by outcome.", ["outcome"])
DISPATCH_LATENCY = Histogram(
    "iac_dispatch_latency_seconds",
    "Time from a run being queued to its dispatch to a runner.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RUNNER_UP = Gauge("iac_runner_up", "1 when the runner answers health checks, else 0.", ["runner"])
ACTIVE_STREAMS = Gauge("iac_active_log_streams", "Live log followers (SSE connections).")
