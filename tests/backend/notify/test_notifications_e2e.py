"""Notifications end to end, with backend processes and a real receiver on loopback: the
events of a real terraform run (signed webhook JSON, a Slack message, no secret in any of
them), undelivered events kept across a backend's restart, and two backends on one
PostgreSQL database delivering each event once."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backend.conftest import ENCRYPTION_KEY, PgServer
from tests.backend.platform import Backend, start_backend
from tests.backend.receiver import Receiver, signature_ok
from tests.conftest import wait_for
from tests.procs import RunnerProcess, free_port, start_runner

SECRET = "N0tify-S3cret-Qz81"
CONFIG = """\
variable "secret" { type = string }
resource "terraform_data" "plain" { input = "prefix-${var.secret}" }
output "hidden" {
  value     = var.secret
  sensitive = true
}
"""
NOTIFY_ENV = {
    "ENCRYPTION_KEY": ENCRYPTION_KEY,
    "IAC_NOTIFY_ALLOW": "127.0.0.1",
    "IAC_NOTIFY_POLL_INTERVAL": "0.05",
    "IAC_NOTIFY_BACKOFF": "0.1",
    "IAC_NOTIFY_BACKOFF_MAX": "0.5",
}
API = "/notifications/destinations"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def settled(backend: Backend, destination: int, count: int, timeout: float = 30) -> Any:
    """The destination's deliveries once `count` of them are no longer pending."""

    def done() -> Any:
        listed = backend.call("GET", f"{API}/{destination}/deliveries", 200)
        return listed if sum(d["status"] != "pending" for d in listed) >= count else None

    return wait_for(done, timeout)


def test_a_real_run_sends_its_events(
    db_url: str, tool_env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    runner: RunnerProcess = start_runner(tmp_path, tool_env, name="r1")
    backend = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, db_url)
    try:
        backend.register("r1", runner.address)
        hook = backend.call("POST", API, 201, json={"name": "hook", "url": receiver.url()})
        slack = backend.call(
            "POST",
            API,
            201,
            json={
                "name": "chat",
                "url": receiver.url("/services/T0/B0/xyz"),
                "kind": "slack",
                "events": ["run.awaiting_approval", "run.succeeded"],
            },
        )
        backend.deploy("web", {"main.tf": CONFIG})
        variable = {"value": SECRET, "sensitive": True, "category": "terraform"}
        backend.call("PUT", "/deployments/web/variables/secret", 201, json=variable)
        backend.wait_runners_healthy("r1")
        run = backend.start("web", "apply")
        backend.wait(run["id"], "awaiting_approval")
        backend.call("POST", f"/runs/{run['id']}/approve", 200)
        assert backend.wait(run["id"], "succeeded", "failed")["status"] == "succeeded"
        got = receiver.wait(lambda r: len(r) == 5, timeout=30)
        hooks = [r for r in got if r.path == "/hook"]
        assert [r.headers["x-iac-event"] for r in hooks] == [
            "run.created", "run.awaiting_approval", "run.succeeded"
        ]  # fmt: skip
        for received in hooks:
            assert signature_ok(hook["secret"], received)
            body = received.json()
            assert body["event"] == received.headers["x-iac-event"]
            assert body["delivery_id"] == received.delivery
            assert body["deployment"] == {"name": "web"} and body["run"]["id"] == run["id"]
            assert body["url"] == f"{backend.url}/runs/{run['id']}"
        awaiting, succeeded = (r.json()["run"] for r in hooks[1:])
        assert awaiting["status"] == "awaiting_approval" and awaiting["changes"]["add"] == 1
        assert succeeded["status"] == "succeeded" and succeeded["operation"] == "apply"
        chats = [r for r in got if r.path == "/services/T0/B0/xyz"]
        assert [r.headers["x-iac-event"] for r in chats] == [
            "run.awaiting_approval",
            "run.succeeded",
        ]
        assert "x-iac-signature" not in chats[0].headers
        message = chats[0].json()
        assert message["text"].startswith(
            f":hourglass_flowing_sand: web: apply run {run['id']} awaits approval "
            "(1 to add, 0 to change, 0 to destroy)"
        ), message["text"]
        assert f"<{backend.url}/runs/{run['id']}|" in message["blocks"][0]["text"]["text"]
        # No secret anywhere: not in what was sent, not in what the API shows of it.
        for received in got:
            assert SECRET.encode() not in received.body
        shown = [backend.client.get(f"{API}/{d['id']}/deliveries").text for d in (hook, slack)]
        assert all(SECRET not in text and "/B0/xyz" not in text for text in shown)
        assert all(d["status"] == "delivered" for d in settled(backend, slack["id"], 2))
    finally:
        backend.stop()
        runner.stop()


def queue_and_cancel(backend: Backend, runs: int) -> None:
    """`runs` plan runs of 'web' (no runner takes them) canceled: two events each."""
    started = [backend.start("web", "plan") for _ in range(runs)]
    for run in started:
        backend.call("POST", f"/runs/{run['id']}/cancel", 200)


def test_undelivered_events_are_sent_after_a_restart(
    db_url: str, tool_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()  # where the receiver will be, once it is up
    backend = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, db_url)
    try:
        url = f"http://127.0.0.1:{port}/hook"
        made = backend.call("POST", API, 201, json={"name": "later", "url": url})
        backend.deploy("web", {"main.tf": CONFIG})
        queue_and_cancel(backend, 2)
        # Tried, refused (nothing listens), still pending.
        wait_for(
            lambda: all(
                d["attempts"] >= 1 and d["status"] == "pending"
                for d in backend.call("GET", f"{API}/{made['id']}/deliveries", 200)
            )
        )
        listed = backend.call("GET", f"{API}/{made['id']}/deliveries", 200)
        assert len(listed) == 4 and "ConnectError" in listed[0]["last_error"]
    finally:
        backend.stop(signal.SIGKILL)
    with Receiver(port=port) as receiver:
        backend = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, db_url)
        try:
            got = receiver.wait(lambda r: len(r) >= 4, timeout=30)
            assert len({r.delivery for r in got}) == 4
            events = sorted(r.headers["x-iac-event"] for r in got)
            assert events == ["run.canceled"] * 2 + ["run.created"] * 2
            done = settled(backend, made["id"], 4)
            assert all(d["status"] == "delivered" for d in done)
            assert len(receiver.received) == 4, "none sent twice"
        finally:
            backend.stop()


def test_two_backends_on_postgresql_deliver_each_event_once(
    pg_server: PgServer, tool_env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    url = pg_server.create_database()
    first = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, url, name="b1")
    second = start_backend(tmp_path, {**tool_env, **NOTIFY_ENV}, url, name="b2")
    try:
        made = first.call("POST", API, 201, json={"name": "both", "url": receiver.url()})
        first.deploy("web", {"main.tf": CONFIG})
        for backend in (first, second):
            queue_and_cancel(backend, 12)
        events = 2 * 2 * 12
        got = receiver.wait(lambda r: len(r) >= events, timeout=60)
        assert len({r.delivery for r in got}) == events
        done = settled(first, made["id"], events)
        assert len(done) == events and all(d["status"] == "delivered" for d in done)
        assert len(receiver.received) == events, "none received twice"
        senders = {a["backend_id"] for d in done for a in d["attempt_log"]}
        assert senders == {"b1", "b2"}, senders
        assert all(json.loads(r.body)["delivery_id"] == r.delivery for r in got)
    finally:
        first.stop()
        second.stop()
