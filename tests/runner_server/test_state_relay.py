"""Terraform's state through the runner: a real runner server, real terraform, and the test
as the backend at the other end of ServeState (state kept in memory)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from runner_server.state_relay import StateRelay
from tests.conftest import OFFLINE_CONFIG, pids_matching, wait_for
from tests.procs import RunnerProcess, execute, lines_of, result_of, start_runner

BACKEND_TF = 'terraform {\n  backend "http" {}\n}\n'
LONG = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep %s"
  }
}
"""
# A local process on the runner host with the run's environment: it tries the state
# endpoint with a wrong password and the right one, and shows the password transformed (a
# transformed value is not masked: that is how the test learns it).
PROBE = """
import base64, os, urllib.request, urllib.error
url = os.environ["TF_HTTP_ADDRESS"]
def get(password):
    token = base64.b64encode(f"{os.environ['TF_HTTP_USERNAME']}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + token})
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code
print("ADDR", url)
print("WRONG", get("not-the-password"))
print("RIGHT", get(os.environ["TF_HTTP_PASSWORD"]))
print("B64", base64.b64encode(os.environ["TF_HTTP_PASSWORD"].encode()).decode())
print("RAW", os.environ["TF_HTTP_PASSWORD"])
"""

Answer = Callable[[pb.StateCall], pb.StateResponse | None]


@dataclass
class FakeBackend:
    """A backend's end of one ServeState stream, on a thread: terraform's state in memory."""

    runner: RunnerProcess
    name: str
    override: Answer | None = None  # answers first; None from it: the default answer
    state: bytes | None = None
    lock: bytes | None = None
    calls: list[pb.StateCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._outbox: queue.Queue[pb.StateReply | None] = queue.Queue()
        self._outbox.put(pb.StateReply(hello=pb.StateHello(channel=self.name)))
        self._channel = self.runner.channel()
        stub = pb_grpc.RunnerStub(self._channel)
        self._stream = stub.ServeState(iter(self._outbox.get, None))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            for call in self._stream:
                self.calls.append(call)
                reply = (self.override and self.override(call)) or self.answer(call)
                reply.call_id = call.call_id
                self._outbox.put(pb.StateReply(response=reply))
        except grpc.RpcError:
            pass  # closed by the test

    def answer(self, call: pb.StateCall) -> pb.StateResponse:
        if call.method == "GET":
            if self.state is None:
                return pb.StateResponse(status=204)
            return pb.StateResponse(status=200, body=self.state)
        if call.method == "POST":
            self.state = call.body
        elif call.method == "LOCK":
            if self.lock is not None:
                return pb.StateResponse(status=423, body=self.lock)
            self.lock = call.body
        elif call.method == "UNLOCK":
            self.lock = None
        elif call.method == "RECOVER":
            return pb.StateResponse(status=200, body=b"it was recovered into state version 7")
        return pb.StateResponse(status=200)

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def close(self) -> None:
        self._stream.cancel()
        self._outbox.put(None)
        self._thread.join(10)
        self._channel.close()


@pytest.fixture
def backends(runner: RunnerProcess) -> Iterator[Callable[..., FakeBackend]]:
    made: list[FakeBackend] = []

    def make(name: str, override: Answer | None = None) -> FakeBackend:
        backend = FakeBackend(runner, name, override)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def workspace(runner: RunnerProcess, name: str, extra: str = "") -> str:
    directory = runner.workspace_root / name
    directory.mkdir()
    (directory / "main.tf").write_text(OFFLINE_CONFIG + extra)
    (directory / "backend.tf").write_text(BACKEND_TF)
    return name


def probe_config(tmp_path: Path) -> str:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return f"""
resource "terraform_data" "probe" {{
  provisioner "local-exec" {{
    command = "{sys.executable} {script}"
  }}
}}
"""


def run(stub: pb_grpc.RunnerStub, run_id: str, work_dir: str, command: str, *args: str,
        channel: str = "b1", cleanup: bool = False) -> list[pb.ExecuteEvent]:  # fmt: skip
    return execute(
        stub,
        run_id=run_id,
        tool="terraform",
        work_dir=work_dir,
        command=command,
        args=list(args),
        state_channel=channel,
        cleanup=cleanup,
    )


def text_of(events: list[pb.ExecuteEvent]) -> str:
    return "\n".join(line.text for line in lines_of(events))


def test_terraform_keeps_its_state_through_the_relay_with_a_password_for_its_run_alone(
    runner: RunnerProcess, backends: Callable[..., FakeBackend], tmp_path: Path
) -> None:
    backend = backends("b1")
    stub = runner.stub()
    work_dir = workspace(runner, "relay", probe_config(tmp_path))
    assert result_of(run(stub, "s-init", work_dir, "init")).success
    events = run(stub, "s-apply", work_dir, "apply", "-auto-approve")
    result = result_of(events)
    assert result.success, (result.error_msg, text_of(events))
    init = [c.method for c in backend.calls if c.run_id == "s-init"]
    apply = [c.method for c in backend.calls if c.run_id == "s-apply" and c.method != "GET"]
    assert init == ["GET"] and apply == ["LOCK", "POST", "UNLOCK"], backend.methods()
    state = json.loads(backend.state or b"{}")
    assert {r["name"] for r in state["resources"]} == {"example", "probe"}

    output = text_of(events)
    # A wrong password is refused; the run's own works while the run lives.
    assert re.search(r"WRONG 401", output) and re.search(r"RIGHT 20[04]", output), output
    password = base64.b64decode(re.findall(r"B64 (\S+)", output)[0]).decode()
    assert len(password) >= 32 and password not in output and "RAW ***" in output
    address = re.findall(r"ADDR (\S+)", output)[0]
    assert address.startswith("http://127.0.0.1:") and address.endswith("/state/s-apply")
    # The run has ended: its password no longer opens anything.
    import urllib.error
    import urllib.request

    token = base64.b64encode(f"s-apply:{password}".encode()).decode()
    request = urllib.request.Request(address, headers={"Authorization": "Basic " + token})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    refused.value.close()


def test_a_call_waits_for_the_backend_that_attaches(
    runner: RunnerProcess, backends: Callable[..., FakeBackend]
) -> None:
    """The state call of a run whose backend is gone (or no longer executes it, 421) is
    held, and answered by the backend that attaches to the run next: a failover."""
    stub = runner.stub()
    first = backends("b1")
    work_dir = workspace(runner, "adopt")
    assert result_of(run(stub, "a-init", work_dir, "init")).success
    first.close()

    # The apply names a channel nobody has opened: its first state call waits.
    call = stub.Execute(
        pb.ExecuteRequest(
            run_id="a-apply",
            tool="terraform",
            work_dir=work_dir,
            command="apply",
            args=["-auto-approve"],
            state_channel="gone",
        )
    )
    events: list[pb.ExecuteEvent] = []
    collector = threading.Thread(target=lambda: events.extend(call), daemon=True)
    collector.start()
    # A backend that answers 421 ("not mine") gets the call, then it waits on.
    refusing = backends("gone", lambda c: pb.StateResponse(status=421))
    wait_for(lambda: refusing.calls, timeout=60)
    adopter = backends("b2")
    adopter.state = first.state
    attach = stub.Attach(pb.AttachRequest(run_id="a-apply", from_seq=1, state_channel="b2"))
    attached = list(attach)
    collector.join(120)
    assert result_of(attached).success, result_of(attached).error_msg
    assert result_of(events).success
    assert [c.method for c in refusing.calls] == ["LOCK"]
    writes = [m for m in adopter.methods() if m != "GET"]
    assert writes == ["LOCK", "POST", "UNLOCK"], adopter.methods()
    assert json.loads(adopter.state or b"{}")["resources"]


@pytest.mark.parametrize("kept", [False, True], ids=["recovered", "refused-kept"])
def test_state_terraform_could_not_save_is_recovered_never_deleted(
    runner: RunnerProcess, backends: Callable[..., FakeBackend], kept: bool
) -> None:
    def refuse_writes(call: pb.StateCall) -> pb.StateResponse | None:
        if call.method == "POST":  # not a 5xx: terraform gives up at once
            return pb.StateResponse(status=409, body=b'{"detail": "no"}')
        if call.method == "RECOVER" and kept:
            return pb.StateResponse(status=409, body=b"older than the stored state")
        return None

    backend = backends("b1", refuse_writes)
    stub = runner.stub()
    work_dir = workspace(runner, "errored")
    assert result_of(run(stub, "e-init", work_dir, "init")).success
    events = run(stub, "e-apply", work_dir, "apply", "-auto-approve", cleanup=True)
    result = result_of(events)
    assert not result.success
    recovered = [c for c in backend.calls if c.method == "RECOVER"]
    assert len(recovered) == 1 and recovered[0].run_id == "e-apply"
    assert json.loads(recovered[0].body)["resources"], "the unsaved state, with its resource"
    directory = runner.workspace_root / work_dir
    if kept:
        assert (directory / "errored.tfstate").is_file(), "kept where it was"
        assert f"it is kept in {directory / 'errored.tfstate'}" in result.error_msg
    else:
        assert not directory.exists(), "cleaned up once the backend kept the state"
        assert "could not save its state: it was recovered into state version 7" in (
            result.error_msg
        )


def test_state_channel_requests_are_checked(runner: RunnerProcess) -> None:
    stub = runner.stub()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"state_channel": "bad channel!"}, "state_channel must be"),
        (
            {"state_channel": "b1", "env_vars": {"TF_HTTP_ADDRESS": "http://x"}},
            "clash with state_channel",
        ),
    ]
    for fields, message in cases:
        with pytest.raises(grpc.RpcError) as refused:
            execute(stub, tool="terraform", command="version", **fields)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or "")
    # A stream whose first message is no hello is refused.
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.ServeState(iter([pb.StateReply(response=pb.StateResponse(call_id=1))])))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_request_no_backend_takes_gets_503_with_retry_after() -> None:
    """In the runner's relay itself: a state request for a run whose backend never comes is
    answered 503 (terraform retries a 5xx) once the hold time is over."""

    async def scenario() -> tuple[int, str, float]:
        relay = StateRelay(hold=0.5, max_body=1024)
        relay.start()
        try:
            env = relay.env_for("held-1", "nobody")
            auth = (env["TF_HTTP_USERNAME"], env["TF_HTTP_PASSWORD"])
            async with httpx.AsyncClient() as client:
                started = time.monotonic()
                response = await client.get(env["TF_HTTP_ADDRESS"], auth=auth, timeout=30)
                took = time.monotonic() - started
            return response.status_code, response.headers.get("retry-after", ""), took
        finally:
            relay.stop()

    status, retry_after, took = asyncio.run(scenario())
    assert status == 503 and retry_after.isdigit()
    assert 0.5 <= took < 10, took


def test_a_restarted_runner_hands_over_unsaved_state_and_removes_what_was_left(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    """A runner server SIGKILLed mid-run leaves its runs' work dirs (with their tfplan).
    Started again on the same root, it removes those the runs wanted removed, and hands
    state terraform could not save to the run's backend (once it connects) before."""
    root = tmp_path / "ws"
    runner = start_runner(tmp_path, tool_env, "--grace", "2", workspace_root=root)
    try:
        stub = runner.stub()
        first = FakeBackend(runner, "b1")
        sleeper = "77.0" + str(os.getpid() % 1000)
        for name in ("plain", "unsaved"):
            workspace(runner, name, LONG % sleeper)
            assert result_of(run(stub, f"{name}-init", name, "init")).success
            stub.Execute(  # left running: the server dies under it
                pb.ExecuteRequest(
                    run_id=f"{name}-apply", tool="terraform", work_dir=name, command="apply",
                    args=["-auto-approve"], state_channel="b1", cleanup=True,
                    on_disconnect=pb.CONTINUE,
                ),
                timeout=0.5,
            ).initial_metadata()  # fmt: skip
        wait_for(lambda: len(pids_matching(f"sleep {sleeper}")) == 2, timeout=60)
        first.close()
    finally:
        runner.stop(signal.SIGKILL)
    wait_for(lambda: not pids_matching(f"sleep {sleeper}"), timeout=30)
    journal = sorted(p.name for p in (root / ".iac-runner" / "runs").iterdir())
    assert journal == ["plain-apply.json", "unsaved-apply.json"]
    # terraform could not save what it had done: it is in the work dir.
    (root / "unsaved" / "errored.tfstate").write_text(
        json.dumps({"version": 4, "serial": 3, "lineage": "l", "resources": []})
    )

    again = start_runner(tmp_path, tool_env, name="again", workspace_root=root)
    try:
        wait_for(lambda: not (root / "plain").exists(), timeout=30)
        assert (root / "unsaved" / "errored.tfstate").exists(), "kept until a backend took it"
        backend = FakeBackend(again, "b1")
        try:
            wait_for(lambda: not (root / "unsaved").exists(), timeout=30)
        finally:
            backend.close()
        recovered = [c for c in backend.calls if c.method == "RECOVER"]
        assert [c.run_id for c in recovered] == ["unsaved-apply"]
        assert json.loads(recovered[0].body)["serial"] == 3
        assert list((root / ".iac-runner" / "runs").iterdir()) == []
    finally:
        again.stop()
