"""End to end: a backend process, runner servers with different labels, real terraform."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.platform import Backend, start_backend
from tests.conftest import OFFLINE_CONFIG
from tests.procs import RunnerProcess, start_runner


@pytest.fixture
def runners(tool_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, RunnerProcess]]:
    started = {
        "aws-1": start_runner(tmp_path, tool_env, "--label", "provider=aws", "--grace", "2", name="aws-1"),
        "gcp-1": start_runner(tmp_path, tool_env, "--label", "provider=gcp", "--grace", "2", name="gcp-1"),
    }
    yield started
    for runner in started.values():
        runner.stop()


@pytest.fixture
def backend(db_url: str, tool_env: dict[str, str], tmp_path: Path, runners: dict[str, RunnerProcess]) -> Iterator[Backend]:
    server = start_backend(tmp_path, tool_env, db_url)
    for name, runner in runners.items():
        server.register(name, runner.address)
    server.wait_runners_healthy(*runners)
    yield server
    server.stop()


def current_state(backend: Backend, deployment: str) -> bytes:
    versions = backend.call("GET", f"/deployments/{deployment}/state", 200)["versions"]
    response = backend.client.get(f"/deployments/{deployment}/state/versions/{versions[0]['id']}")
    assert response.status_code == 200, response.text
    return response.content


def test_plan_approve_apply_destroy(backend: Backend) -> None:
    backend.deploy("web", {"main.tf": OFFLINE_CONFIG}, required_labels={"provider": "aws"})
    backend.call("PUT", "/deployments/web/variables/greeting", 201, json={"value": "hi from e2e"})
    run = backend.start("web", "apply")
    run = backend.wait(run["id"], "awaiting_approval")
    assert run["runner_id"] == "aws-1"
    assert run["has_changes"] is True
    assert "1 to add" in backend.log_text(run["id"])
    backend.call("POST", f"/runs/{run['id']}/approve", 200)
    run = backend.wait(run["id"], "succeeded", "failed")
    assert run["status"] == "succeeded", run
    log = backend.log_text(run["id"])
    assert "provisioned hi from e2e" in log
    assert "Apply complete! Resources: 1 added" in log
    kinds = [e["kind"] for e in run["events"]]
    assert kinds[0] == "queued" and "approved" in kinds and kinds[-1] == "succeeded"
    assert "state_locked" in kinds and "state_unlocked" in kinds

    state = backend.call("GET", "/deployments/web/state", 200)
    assert state["lock"] is None
    assert len(state["versions"]) >= 1
    assert json.loads(current_state(backend, "web"))["outputs"]["greeting"]["value"] == "hi from e2e"

    destroy = backend.start("web", "destroy", auto_approve=True)
    destroy = backend.wait(destroy["id"], "succeeded", "failed")
    assert destroy["status"] == "succeeded", destroy
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in backend.log_text(destroy["id"])
    assert json.loads(current_state(backend, "web"))["resources"] == []
