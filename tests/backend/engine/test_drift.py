"""Drift detection end to end with real terraform: a configuration whose refresh-only plan
changes when a file it reads changes (the world outside terraform), checked through the
API. The verdicts (unknown, in_sync, drifted with what drifted, check_failed with why),
the history, the fleet view's order, and drift cleared by an apply."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backend.conftest import ENCRYPTION_KEY
from tests.backend.platform import Backend, start_backend
from tests.conftest import wait_for
from tests.procs import RunnerProcess, start_runner

# Reads "the real world": another state file's outputs, outside the configuration.
CONFIG = """\
variable "world" { type = string }
resource "terraform_data" "kept" { input = "x" }
data "terraform_remote_state" "world" {
  backend = "local"
  config  = { path = var.world }
}
output "colour" { value = data.terraform_remote_state.world.outputs.colour }
"""


def world_state(colour: str) -> str:
    outputs = {"colour": {"value": colour, "type": "string"}}
    return json.dumps(
        {"version": 4, "serial": 1, "lineage": "world", "outputs": outputs, "resources": []}
    )


@pytest.fixture
def backend(db_url: str, tool_env: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
    runner: RunnerProcess = start_runner(tmp_path, tool_env, name="r1")
    server = start_backend(tmp_path, tool_env, db_url, ENCRYPTION_KEY=ENCRYPTION_KEY)
    server.register("r1", runner.address)
    server.wait_runners_healthy("r1")
    yield server
    server.stop()
    runner.stop()


def check(backend: Backend, name: str) -> dict[str, Any]:
    """A drift check of `name`, started through the API and waited for."""
    run = backend.call("POST", f"/deployments/{name}/drift", 201)
    assert run["operation"] == "drift"
    return backend.wait(run["id"], "succeeded", "failed")


def test_drift_is_found_reported_and_cleared(backend: Backend, tmp_path: Path) -> None:
    world = tmp_path / "world.tfstate"
    world.write_text(world_state("blue"))
    backend.deploy("web", {"main.tf": CONFIG})
    body = {"value": str(world), "category": "terraform"}
    backend.call("PUT", "/deployments/web/variables/world", 201, json=body)
    backend.deploy("calm", {"main.tf": 'output "o" { value = 1 }\n'})
    applied = backend.start("web", "apply", auto_approve="always")
    assert backend.wait(applied["id"], "succeeded", "failed")["status"] == "succeeded"

    fleet = backend.call("GET", "/drift", 200)
    assert [(d["deployment"], d["status"]) for d in fleet] == [
        ("calm", "unknown"),
        ("web", "unknown"),
    ]

    first = check(backend, "web")
    assert first["status"] == "succeeded", (first["error_msg"], backend.log_text(first["id"]))
    web = backend.call("GET", "/deployments/web/drift", 200)
    assert web["status"] == "in_sync" and web["run_id"] == first["id"]
    assert backend.call("GET", "/deployments/web", 200)["drift_status"] == "in_sync"

    # The world changes outside terraform: the next check finds it.
    world.write_text(world_state("red"))
    second = check(backend, "web")
    assert second["status"] == "succeeded"
    assert next(e for e in second["events"] if e["kind"] == "succeeded")["message"] == (
        "drift found"
    )
    web = backend.call("GET", "/deployments/web/drift", 200)
    assert web["status"] == "drifted", web
    assert web["detail"]["outputs"] == ["colour"]
    assert [c["status"] for c in web["history"]] == ["drifted", "in_sync"]
    fleet = backend.call("GET", "/drift", 200)
    assert [(d["deployment"], d["status"]) for d in fleet] == [
        ("web", "drifted"),
        ("calm", "unknown"),
    ]
    # The plan review of the check says what drifted, as for any plan.
    plan = backend.call("GET", f"/runs/{second['id']}/plan", 200)
    assert [o["name"] for o in plan["output_changes"]] == ["colour"]
    assert plan["output_changes"][0]["after"] == "red"

    # A check that cannot read the world fails, and says why.
    world.write_text("not json")
    failed = check(backend, "web")
    assert failed["status"] == "failed"
    web = backend.call("GET", "/deployments/web/drift", 200)
    assert web["status"] == "check_failed" and web["detail"]["reason"], web

    # An apply takes the world's values into the state: in sync again.
    world.write_text(world_state("red"))
    applied = backend.start("web", "apply", auto_approve="always")
    assert backend.wait(applied["id"], "succeeded", "failed")["status"] == "succeeded"
    cleared = check(backend, "web")
    assert cleared["status"] == "succeeded"
    web = backend.call("GET", "/deployments/web/drift", 200)
    assert web["status"] == "in_sync"
    assert [c["status"] for c in web["history"]] == [
        "in_sync",
        "check_failed",
        "drifted",
        "in_sync",
    ]


def test_a_drift_check_is_not_queued_twice(backend: Backend) -> None:
    # No runner has the label: the first check stays queued.
    backend.deploy("idle", {"main.tf": 'output "o" { value = 1 }\n'}, required_labels={"x": "y"})
    first = backend.call("POST", "/deployments/idle/drift", 201)
    again = backend.client.post("/deployments/idle/drift")
    assert again.status_code == 409
    assert f"run {first['id']}" in again.json()["detail"]


def test_a_drift_schedule_checks_when_due(tool_env: dict[str, str], tmp_path: Path) -> None:
    """A schedule of kind drift, due (its due time put in the past in the database, as if
    the backend had been down over it): one drift check is queued, runs, and sets the
    deployment's verdict."""
    db = tmp_path / "iac.db"
    runner = start_runner(tmp_path, tool_env, name="r1")
    backend = start_backend(
        tmp_path, tool_env, f"sqlite:///{db}", ENCRYPTION_KEY=ENCRYPTION_KEY,
        IAC_SCHEDULE_INTERVAL="0.2",
    )  # fmt: skip
    try:
        backend.register("r1", runner.address)
        world = tmp_path / "world.tfstate"
        world.write_text(world_state("blue"))
        backend.deploy("web", {"main.tf": CONFIG})
        body = {"value": str(world), "category": "terraform"}
        backend.call("PUT", "/deployments/web/variables/world", 201, json=body)
        applied = backend.start("web", "apply", auto_approve="always")
        assert backend.wait(applied["id"], "succeeded", "failed")["status"] == "succeeded"
        world.write_text(world_state("red"))
        schedule = backend.call(
            "POST", "/deployments/web/schedules", 201, json={"cron": "0 3 * * *", "kind": "drift"}
        )
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE schedules SET next_run_at = '2000-01-01 03:00:00.000000'")

        def checked() -> dict[str, Any] | None:
            runs = backend.call("GET", "/runs?deployment=web", 200)
            drift_runs = [r for r in runs if r["operation"] == "drift"]
            return drift_runs[0] if drift_runs else None

        found = wait_for(checked, timeout=30)
        assert isinstance(found, dict)
        run = found
        assert run["created_by"] == f"schedule {schedule['id']}"
        assert backend.wait(run["id"], "succeeded", "failed")["status"] == "succeeded"
        assert backend.call("GET", "/deployments/web/drift", 200)["status"] == "drifted"
        shown = backend.call("GET", f"/deployments/web/schedules/{schedule['id']}", 200)
        assert shown["next_run_at"] > run["created_at"]  # the next one, not a missed one
        assert len(backend.call("GET", "/runs?deployment=web", 200)) == 2
    finally:
        backend.stop()
        runner.stop()


def test_drift_events_are_sent_when_the_verdict_changes(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    """A webhook subscribed to every event, and a Slack destination to the drift ones:
    drift.detected once per new drift (not again for the same), drift.check_failed when
    checks start failing, signed, naming what drifted and never a value; the checks' runs
    send no run.* event."""
    from tests.backend.notify.test_notifications_e2e import NOTIFY_ENV
    from tests.backend.receiver import Receiver, signature_ok

    world = tmp_path / "world.tfstate"
    world.write_text(world_state("blue-Secretish-1"))
    runner = start_runner(tmp_path, tool_env, name="r1")
    backend = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, f"sqlite:///{tmp_path}/a.db")
    try:
        with Receiver() as receiver:
            backend.register("r1", runner.address)
            everything = [
                "run.created", "run.awaiting_approval", "run.succeeded", "run.failed",
                "run.canceled", "drift.detected", "drift.check_failed",
            ]  # fmt: skip
            hook = backend.call(
                "POST", "/notifications/destinations", 201,
                json={"name": "hook", "url": receiver.url(), "events": everything},
            )  # fmt: skip
            backend.call(
                "POST", "/notifications/destinations", 201,
                json={
                    "name": "chat", "url": receiver.url("/services/T/B/x"), "kind": "slack",
                    "events": ["drift.detected", "drift.check_failed"],
                },
            )  # fmt: skip
            backend.deploy("web", {"main.tf": CONFIG})
            body = {"value": str(world), "category": "terraform"}
            backend.call("PUT", "/deployments/web/variables/world", 201, json=body)
            applied = backend.start("web", "apply", auto_approve="always")
            assert backend.wait(applied["id"], "succeeded", "failed")["status"] == "succeeded"
            receiver.wait(lambda r: len(r) == 2, timeout=30)  # the apply's created, succeeded

            check(backend, "web")  # in sync: nothing to say
            world.write_text(world_state("red-Secretish-2"))
            drifted = check(backend, "web")
            check(backend, "web")  # the same drift: said once
            world.write_text("not json")
            failed = check(backend, "web")
            got = receiver.wait(lambda r: len(r) == 6, timeout=30)
            hooks = [r for r in got if r.path == "/hook"]
            assert [r.headers["x-iac-event"] for r in hooks] == [
                "run.created", "run.succeeded", "drift.detected", "drift.check_failed"
            ]  # fmt: skip
            detected, broken = hooks[2].json(), hooks[3].json()
            assert all(signature_ok(hook["secret"], r) for r in hooks)
            assert detected["run"]["id"] == drifted["id"]
            assert detected["drift"] == {
                "status": "drifted",
                "resources": [],
                "outputs": ["colour"],
            }
            assert detected["url"] == f"{backend.url}/runs/{drifted['id']}"
            assert broken["run"]["id"] == failed["id"]
            assert broken["drift"]["status"] == "check_failed" and broken["drift"]["reason"]
            chats = [r.json() for r in got if r.path == "/services/T/B/x"]
            assert "web" in chats[0]["text"] and "drifted" in chats[0]["text"]
            assert "output.colour" in json.dumps(chats[0]["blocks"])
            assert "Why" in json.dumps(chats[1]["blocks"])
            for received in got:  # what the world holds is a value: never sent
                assert b"Secretish" not in received.body
    finally:
        backend.stop()
        runner.stop()
