"""Backends on different databases share a runner: their runner-side run ids never collide.

Each database numbers its runs from 1, so without a per-database part in the runner-side
id, the second backend's run #1 would be refused by the runner as ALREADY_EXISTS.
"""

from __future__ import annotations

from pathlib import Path

from tests.backend.platform import start_backend
from tests.procs import start_runner

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'


def test_two_backends_on_two_databases_share_one_runner(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    runner = start_runner(tmp_path, tool_env, "--max-concurrent", "4", name="shared")
    backends = []
    try:
        for i in range(2):
            url = f"sqlite:///{tmp_path / f'db{i}' / 'iac.db'}"
            backends.append(start_backend(tmp_path, tool_env, url, name=f"b{i}"))
        for backend in backends:
            backend.register("shared", runner.address)
            backend.wait_runners_healthy("shared")
            backend.deploy("d", {"main.tf": FAST_CONFIG})
        # Queued back to back: both plans of "run 1" are on the runner at about the same time.
        runs = [backend.start("d", "plan") for backend in backends]
        assert [r["id"] for r in runs] == [1, 1]
        done = [
            backend.wait(run["id"], "succeeded", "failed", timeout=120)
            for backend, run in zip(backends, runs, strict=True)
        ]
        assert [r["status"] for r in done] == ["succeeded", "succeeded"], done
        assert all(r["runner_id"] == "shared" for r in done)
        # What the runner executed: two different plan runs, one per backend.
        plans = {
            str(e["run_id"])
            for e in runner.log_events()
            if e.get("event") == "run_start" and str(e.get("run_id", "")).endswith("-plan")
        }
        assert len(plans) == 2, plans
    finally:
        for backend in backends:
            backend.stop()
        runner.stop()
