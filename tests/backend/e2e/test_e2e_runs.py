"""End to end: a backend process, runner servers with different labels, real terraform."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backend.platform import Backend, sse_events, start_backend
from tests.conftest import OFFLINE_CONFIG, pids_matching, wait_for
from tests.procs import RunnerProcess, start_runner


@pytest.fixture
def runners(tool_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, RunnerProcess]]:
    started = {
        "aws-1": start_runner(
            tmp_path, tool_env, "--label", "provider=aws", "--grace", "2", name="aws-1"
        ),
        "gcp-1": start_runner(
            tmp_path, tool_env, "--label", "provider=gcp", "--grace", "2", name="gcp-1"
        ),
    }
    yield started
    for runner in started.values():
        runner.stop()


@pytest.fixture
def backend(
    db_url: str, tool_env: dict[str, str], tmp_path: Path, runners: dict[str, RunnerProcess]
) -> Iterator[Backend]:
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
    assert run["changes"] == {
        "add": 1, "change": 0, "destroy": 0, "replace": 0, "read": 0, "import": 0, "move": 0
    }  # fmt: skip
    assert len(run["plan_sha256"]) == 64
    assert "1 to add" in backend.log_text(run["id"])
    # The plan's JSON is never in the log: it holds every value in the clear.
    assert '"format_version"' not in backend.log_text(run["id"])
    backend.call("POST", f"/runs/{run['id']}/approve", 200)
    run = backend.wait(run["id"], "succeeded", "failed")
    assert run["status"] == "succeeded", run
    log = backend.log_text(run["id"])
    assert "provisioned hi from e2e" in log
    assert "Apply complete! Resources: 1 added" in log
    # Each step starts with a header line of the backend's own, phases told apart.
    headers = [line for line in log.splitlines() if line.startswith("==> ")]
    assert headers == [
        "==> plan phase: terraform init (runner aws-1)",
        "==> plan phase: terraform plan -out=tfplan -detailed-exitcode (runner aws-1)",
        "==> plan phase: terraform show -json tfplan (runner aws-1)",
        "==> Plan: 1 to add, 0 to change, 0 to destroy; 0 to replace",
        "==> apply phase: terraform init (runner aws-1)",
        "==> apply phase: terraform apply tfplan (runner aws-1)",
    ], headers
    kinds = [e["kind"] for e in run["events"]]
    assert kinds[0] == "queued" and "approved" in kinds and kinds[-1] == "succeeded"
    assert "state_locked" in kinds and "state_unlocked" in kinds

    state = backend.call("GET", "/deployments/web/state", 200)
    assert state["lock"] is None
    assert len(state["versions"]) >= 1
    assert (
        json.loads(current_state(backend, "web"))["outputs"]["greeting"]["value"] == "hi from e2e"
    )

    destroy = backend.start("web", "destroy", auto_approve=True)
    destroy = backend.wait(destroy["id"], "succeeded", "failed")
    assert destroy["status"] == "succeeded", json.dumps(destroy)
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in backend.log_text(
        destroy["id"]
    )
    assert json.loads(current_state(backend, "web"))["resources"] == []


LONG_CONFIG = """\
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "echo started; sleep %s"
  }
}
"""

LINES_CONFIG = """\
resource "terraform_data" "lines" {
  provisioner "local-exec" {
    command = "for i in $(seq 1 %d); do echo line-$i; sleep %s; done"
  }
}
"""

FAST_CONFIG = 'resource "terraform_data" "x" {}\n'
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def printed(lines: list[str]) -> list[int]:
    """The numbers of the `line-N` lines the local-exec printed, in log order."""
    found = (re.search(r"\(local-exec\): line-(\d+)$", ANSI.sub("", line)) for line in lines)
    return [int(m.group(1)) for m in found if m]


def test_routing_by_labels_and_the_reason_a_run_waits(backend: Backend) -> None:
    backend.deploy("on-gcp", {"main.tf": FAST_CONFIG}, required_labels={"provider": "gcp"})
    backend.deploy("on-azure", {"main.tf": FAST_CONFIG}, required_labels={"provider": "azure"})
    gcp = backend.start("on-gcp", "plan")
    azure = backend.start("on-azure", "plan")
    assert backend.wait(gcp["id"], "succeeded", "failed")["runner_id"] == "gcp-1"
    waiting = backend.wait(azure["id"], "queued")
    wait_for(lambda: "provider=azure" in backend.run(azure["id"])["wait_reason"])
    assert (
        "no registered runner has the labels provider=azure"
        in backend.run(azure["id"])["wait_reason"]
    )
    assert waiting["runner_id"] is None
    backend.call("POST", f"/runs/{azure['id']}/cancel", 200)
    assert backend.run(azure["id"])["status"] == "canceled"


@pytest.mark.parametrize("force", [False, True])
def test_cancel_during_a_long_apply_releases_the_lock(backend: Backend, force: bool) -> None:
    marker = "71.0101" if force else "71.0202"
    backend.deploy("long", {"main.tf": LONG_CONFIG % marker}, required_labels={"provider": "aws"})
    run = backend.start("long", "apply", auto_approve=True)
    wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=60)
    assert backend.call("GET", "/deployments/long/state", 200)["lock"]["run_id"] == run["id"]
    backend.call("POST", f"/runs/{run['id']}/cancel", 200, params={"force": force})
    run = backend.wait(run["id"], "canceled", "failed", "succeeded")
    assert run["status"] == "canceled", run
    wait_for(lambda: not pids_matching(f"sleep {marker}"))
    assert backend.call("GET", "/deployments/long/state", 200)["lock"] is None
    kinds = [e["kind"] for e in run["events"]]
    assert "cancel_requested" in kinds
    if force:
        assert "state_lock_released" in kinds, kinds
        assert "SIGKILL" in run["error_msg"]
    else:
        assert "SIGINT" in run["error_msg"]
    # Terraform persists the state it has when interrupted, the same state again at its
    # end: one version of it, not two identical ones.
    versions = backend.call("GET", "/deployments/long/state", 200)["versions"]
    stored = [(v["serial"], v["lineage"], v["md5"]) for v in versions]
    assert len(stored) == len(set(stored)), versions
    # The deployment takes the next run.
    again = backend.start("long", "plan")
    assert backend.wait(again["id"], "succeeded", "failed")["status"] == "succeeded"


def test_backend_killed_mid_run_reattaches_and_loses_no_line(
    backend: Backend, db_url: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    n = 60
    backend.deploy(
        "chatty", {"main.tf": LINES_CONFIG % (n, "0.05")}, required_labels={"provider": "aws"}
    )
    run = backend.start("chatty", "apply", auto_approve=True)
    wait_for(lambda: "line-5" in backend.log_text(run["id"]), timeout=60)
    backend.stop(signal.SIGKILL)
    port = int(backend.url.rsplit(":", 1)[1])
    restarted = start_backend(tmp_path, tool_env, db_url, port=port)
    try:
        done = restarted.wait(run["id"], "succeeded", "failed", timeout=120)
        assert done["status"] == "succeeded", done
        assert "adopted" in [e["kind"] for e in done["events"]]
        lines = restarted.log_text(run["id"]).splitlines()
        assert printed(lines) == list(range(1, n + 1)), lines
        assert len(lines) == done["last_seq"]
    finally:
        restarted.stop()


def test_log_follow_streams_live_and_resumes_with_last_event_id(backend: Backend) -> None:
    n = 30
    backend.deploy(
        "follow", {"main.tf": LINES_CONFIG % (n, "0.05")}, required_labels={"provider": "aws"}
    )
    run = backend.start("follow", "apply", auto_approve=True)
    received: list[tuple[int, str]] = []
    last_id = None
    url = f"/runs/{run['id']}/logs"
    with backend.client.stream("GET", url, params={"follow": "true"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event, event_id, data in sse_events(response):
            if event == "message":
                received += [
                    (data["seq"] + i, text) for i, text in enumerate(data["text"].split("\n"))
                ]
                last_id = event_id
                if any("line-3" in text for _, text in received):
                    break
    assert last_id is not None and int(last_id) == received[-1][0]
    statuses = []
    headers = {"Last-Event-ID": last_id}
    with backend.client.stream(
        "GET", url, params={"follow": "true"}, headers=headers, timeout=60
    ) as response:
        for event, _, data in sse_events(response):
            if event == "message":
                received += [
                    (data["seq"] + i, text) for i, text in enumerate(data["text"].split("\n"))
                ]
            elif event == "status":
                statuses.append(data["status"])
            elif event == "end":
                break
    assert [seq for seq, _ in received] == list(range(1, len(received) + 1))
    assert statuses[-1] == "succeeded"
    stored = backend.log_text(run["id"]).splitlines()
    assert [text for _, text in received] == stored
    assert printed([t for _, t in received]) == list(range(1, n + 1))


def test_runs_of_one_deployment_never_overlap_and_priority_orders_the_queue(
    db_url: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    runner = start_runner(tmp_path, tool_env, "--max-concurrent", "1", name="solo")
    server = start_backend(tmp_path, tool_env, db_url)
    try:
        server.register("solo", runner.address)
        server.wait_runners_healthy("solo")
        server.deploy("blocker", {"main.tf": LONG_CONFIG % "1.5"})
        server.deploy("low", {"main.tf": FAST_CONFIG})
        server.deploy("high", {"main.tf": FAST_CONFIG})
        blocker = server.start("blocker", "apply", auto_approve=True)
        server.wait(blocker["id"], "running", "applying")
        low = server.start("low", "plan", priority=0)
        high = server.start("high", "plan", priority=10)
        same = [server.start("low", "plan", priority=0) for _ in range(2)]
        wait_for(lambda: "busy" in server.run(low["id"])["wait_reason"])
        ids = [blocker["id"], low["id"], high["id"], *(r["id"] for r in same)]
        runs = {i: server.wait(i, "succeeded", "failed", timeout=120) for i in ids}
        assert all(r["status"] == "succeeded" for r in runs.values()), runs
        assert runs[high["id"]]["started_at"] < runs[low["id"]]["started_at"]
        lows = sorted(
            (runs[i] for i in (low["id"], *(r["id"] for r in same))), key=lambda r: r["started_at"]
        )
        for before, after in zip(lows, lows[1:], strict=False):
            assert before["ended_at"] <= after["started_at"], "runs of one deployment overlapped"
    finally:
        server.stop()
        runner.stop()


def test_runner_killed_mid_run_fails_the_run_and_releases_the_lock(
    db_url: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    doomed = start_runner(tmp_path, tool_env, "--label", "provider=aws", name="doomed")
    spare = start_runner(
        tmp_path, tool_env, "--label", "provider=aws", "--max-concurrent", "1", name="spare"
    )
    server = start_backend(tmp_path, tool_env, db_url, IAC_RUNNER_LOST_TIMEOUT="3")
    try:
        server.register("doomed", doomed.address, provider="aws")
        server.wait_runners_healthy("doomed")
        marker = "72.0303"
        server.deploy(
            "victim", {"main.tf": LONG_CONFIG % marker}, required_labels={"provider": "aws"}
        )
        run = server.start("victim", "apply", auto_approve=True)
        wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=60)
        assert server.call("GET", "/deployments/victim/state", 200)["lock"] is not None
        doomed.proc.kill()
        wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=10)
        run = server.wait(run["id"], "failed", timeout=60)
        assert (
            "lost contact with runner doomed" in run["error_msg"] or "doomed" in run["error_msg"]
        ), run
        assert server.call("GET", "/deployments/victim/state", 200)["lock"] is None
        assert "state_lock_released" in [e["kind"] for e in run["events"]]
        server.register("spare", spare.address, provider="aws")
        server.wait_runners_healthy("spare")
        server.deploy("next", {"main.tf": FAST_CONFIG}, required_labels={"provider": "aws"})
        nxt = server.wait(server.start("next", "plan")["id"], "succeeded", "failed")
        assert nxt["status"] == "succeeded" and nxt["runner_id"] == "spare"
    finally:
        server.stop()
        doomed.stop()
        spare.stop()


def test_bad_run_requests_are_4xx_and_change_nothing(backend: Backend) -> None:
    backend.deploy("web", {"main.tf": FAST_CONFIG})
    before = backend.call("GET", "/runs", 200)
    for body, status in [
        ({"deployment": "nope", "operation": "plan"}, 404),
        ({"deployment": "web", "operation": "explode"}, 422),
        ({"deployment": "web"}, 422),
        ({"deployment": "web", "operation": "plan", "priority": "high"}, 422),
        ({"deployment": "web", "operation": "plan", "extra": 1}, 422),
        ({"deployment": "web", "operation": "plan", "config_version": 99}, 404),
    ]:
        response = backend.client.post("/runs", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"]
    for method, path, status in [
        ("GET", "/runs/999999", 404),
        ("POST", "/runs/999999/approve", 404),
        ("POST", "/runs/999999/cancel", 404),
        ("GET", "/runs/999999/logs", 404),
        ("GET", "/runs/abc", 422),
        ("GET", "/runs?status=bogus", 422),
        ("GET", "/runs?limit=0", 422),
    ]:
        response = backend.client.request(method, path)
        assert response.status_code == status, (method, path, response.text)
    assert backend.call("GET", "/runs", 200) == before
    done = backend.wait(backend.start("web", "plan")["id"], "succeeded")
    response = backend.client.post(f"/runs/{done['id']}/approve")
    assert (
        response.status_code == 409 and "only a run awaiting approval" in response.json()["detail"]
    )
    response = backend.client.post(f"/runs/{done['id']}/cancel")
    assert response.status_code == 409 and "already ended" in response.json()["detail"]
    anon = httpx.get(backend.url + "/api/v1/runs")
    assert anon.status_code == 401
