"""Cancel, disconnect, timeout, Attach, capacity and drain, against real processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.conftest import OFFLINE_CONFIG, pids_alive, pids_matching, wait_for
from tests.procs import RunnerProcess, execute, lines_of, result_of, start_runner
from tests.runner_stdio.helpers import unique_seconds

LONG_CONFIG = """\
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep %s"
  }
}
"""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _start_and_wait_for_line(stub, **fields):  # type: ignore[no-untyped-def]
    """Start Execute; return the call and the events up to the first output line."""
    call = stub.Execute(pb.ExecuteRequest(**fields))
    events = []
    for event in call:
        events.append(event)
        if event.HasField("output"):
            return call, events
    raise AssertionError(f"stream ended before any output: {events}")


def test_cancel_rpc_stops_terraform_gracefully_and_releases_the_lock(
    runner: RunnerProcess, tmp_path: Path
) -> None:
    stub = runner.stub()
    marker = "61.0101"
    (runner.workspace_root / "long").mkdir()
    (runner.workspace_root / "long" / "main.tf").write_text(LONG_CONFIG % marker)
    assert result_of(execute(stub, tool="terraform", command="init", work_dir="long")).success
    call = stub.Execute(
        pb.ExecuteRequest(
            run_id="cancel-me",
            tool="terraform",
            command="apply",
            work_dir="long",
            args=["-auto-approve"],
        )
    )
    events: list[pb.ExecuteEvent] = []
    reader = threading.Thread(target=lambda: events.extend(call))
    reader.start()
    wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=30)
    reply = stub.Cancel(pb.CancelRequest(run_id="cancel-me"))
    assert reply.status == pb.CANCEL_STATUS_CANCELING
    reader.join(30)
    result = result_of(events)
    assert not result.success
    assert result.outcome == pb.OUTCOME_CANCELED
    assert "SIGINT" in result.error_msg
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=10)
    assert not (runner.workspace_root / "long" / ".terraform.tfstate.lock.info").exists()
    # The state is consistent: terraform can read it and plan again.
    state = execute(stub, tool="terraform", command="state", work_dir="long", args=["list"])
    assert result_of(state).success
    assert (
        stub.Cancel(pb.CancelRequest(run_id="cancel-me")).status
        == pb.CANCEL_STATUS_ALREADY_FINISHED
    )


def test_client_disconnect_cancels_by_default(fake_runner: RunnerProcess) -> None:
    marker = "62.0202"
    stub = fake_runner.stub()
    call, _ = _start_and_wait_for_line(
        stub,
        run_id="dc",
        tool="terraform",
        command="plan",
        args=["--lines", "1", "--sleep", marker],
    )
    wait_for(lambda: pids_matching(f"sleep {marker}"))
    call.cancel()
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=15)
    result = result_of(list(stub.Attach(pb.AttachRequest(run_id="dc"))))
    assert result.outcome == pb.OUTCOME_CANCELED


def test_on_disconnect_continue_then_attach_returns_exactly_the_missing_lines(
    fake_runner: RunnerProcess,
) -> None:
    stub = fake_runner.stub()
    n = 300
    call = stub.Execute(
        pb.ExecuteRequest(
            run_id="cont",
            tool="terraform",
            command="plan",
            args=["--lines", str(n), "--every", "0.005"],
            on_disconnect=pb.CONTINUE,
        )
    )
    seen: list[pb.Line] = []
    for event in call:
        if event.HasField("output"):
            seen.extend(event.output.lines)
            if len(seen) >= 20:
                break
    call.cancel()
    last = seen[-1].seq
    rest = list(stub.Attach(pb.AttachRequest(run_id="cont", from_seq=last + 1)))
    assert rest[0].HasField("started") and rest[0].started.run_id == "cont"
    more = lines_of(rest)
    assert [line.seq for line in seen + more] == list(range(1, n + 1))
    assert result_of(rest).success
    # Attach from the start replays everything.
    again = lines_of(list(stub.Attach(pb.AttachRequest(run_id="cont"))))
    assert [line.text for line in again] == [line.text for line in seen + more]


def test_timeout_stops_the_run(fake_runner: RunnerProcess) -> None:
    marker = "63.0303"
    events = execute(
        fake_runner.stub(), tool="terraform", command="plan", args=["--sleep", marker], timeout=1
    )
    result = result_of(events)
    assert result.outcome == pb.OUTCOME_TIMED_OUT
    assert "timed out after 1 s" in result.error_msg
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=10)


def test_forced_cancel_kills_at_once(tool_env: dict[str, str], tmp_path: Path) -> None:
    # A long grace proves that force does not wait for it.
    server = start_runner(tmp_path, tool_env, "--grace", "600")
    try:
        stub = server.stub()
        marker = "64.0404"
        (server.workspace_root / "f").mkdir()
        (server.workspace_root / "f" / "main.tf").write_text(LONG_CONFIG % marker)
        assert result_of(execute(stub, tool="terraform", command="init", work_dir="f")).success
        call = stub.Execute(
            pb.ExecuteRequest(
                run_id="force",
                tool="terraform",
                command="apply",
                work_dir="f",
                args=["-auto-approve"],
            )
        )
        events: list[pb.ExecuteEvent] = []
        reader = threading.Thread(target=lambda: events.extend(call))
        reader.start()
        wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=30)
        stub.Cancel(pb.CancelRequest(run_id="force", force=True))
        reader.join(15)
        assert not reader.is_alive()
        result = result_of(events)
        assert result.outcome == pb.OUTCOME_KILLED
        assert "SIGKILL" in result.error_msg
        wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=5)
    finally:
        server.stop()


def test_unknown_run_is_not_found(fake_runner: RunnerProcess) -> None:
    stub = fake_runner.stub()
    for call in (
        lambda: stub.Cancel(pb.CancelRequest(run_id="nope")),
        lambda: list(stub.Attach(pb.AttachRequest(run_id="nope"))),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in info.value.details()


def test_full_runner_answers_resource_exhausted(fake_runner: RunnerProcess) -> None:
    stub = fake_runner.stub()  # max_concurrent 2
    marker = "65.0505"
    calls = [
        stub.Execute(
            pb.ExecuteRequest(
                run_id=f"busy{i}", tool="terraform", command="plan", args=["--sleep", marker]
            )
        )
        for i in range(2)
    ]
    wait_for(lambda: stub.GetInfo(pb.GetInfoRequest()).active == 2)
    with pytest.raises(grpc.RpcError) as info:
        execute(stub, tool="terraform", command="plan")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2/2" in info.value.details()
    for i in range(2):
        stub.Cancel(pb.CancelRequest(run_id=f"busy{i}", force=True))
    for call in calls:
        assert result_of(list(call)).outcome == pb.OUTCOME_KILLED
    wait_for(lambda: not pids_matching(f"sleep {marker}"))
    assert stub.GetInfo(pb.GetInfoRequest()).active == 0


def test_drain_refuses_new_runs_and_lets_active_ones_finish(
    fake_env: dict[str, str], tmp_path: Path
) -> None:
    server = start_runner(tmp_path, fake_env)
    stub = server.stub()
    health = health_pb2_grpc.HealthStub(server.channels[0])
    call, events = _start_and_wait_for_line(
        stub, tool="terraform", command="plan", args=["--lines", "1", "--sleep", "1.5"]
    )
    server.proc.send_signal(signal.SIGTERM)
    wait_for(
        lambda: (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        execute(stub, tool="terraform", command="plan")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in info.value.details()
    assert stub.GetInfo(pb.GetInfoRequest()).draining
    events.extend(call)
    assert result_of(events).success, "the active run finished"
    assert server.proc.wait(30) == 0


def test_second_sigterm_cancels_active_runs(fake_env: dict[str, str], tmp_path: Path) -> None:
    server = start_runner(tmp_path, fake_env, "--grace", "1")
    marker = "66.0606"
    call, events = _start_and_wait_for_line(
        server.stub(), tool="terraform", command="plan", args=["--lines", "1", "--sleep", marker]
    )
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: '"drain"' in server.log.read_text())
    server.proc.send_signal(signal.SIGTERM)
    events.extend(call)
    assert result_of(events).outcome == pb.OUTCOME_CANCELED
    assert server.proc.wait(30) == 0
    wait_for(lambda: not pids_matching(f"sleep {marker}"))


def test_sigkill_of_iac_runner_still_gives_a_result_and_no_orphan(
    fake_runner: RunnerProcess,
) -> None:
    marker = "67.0707"
    stub = fake_runner.stub()
    call, events = _start_and_wait_for_line(
        stub, tool="terraform", command="plan", args=["--lines", "1", "--sleep", marker]
    )
    wait_for(lambda: pids_matching(f"sleep {marker}"))
    # Only this server's children (other runner servers on the machine keep theirs), and
    # only the one running a tool: the spare waiting for a request has no child.
    runners = [
        p
        for p in pids_matching("iac-runner --stream")
        if _ppid(p) == fake_runner.proc.pid
        and any(_ppid(c) == p for c in pids_matching("fake-terraform"))
    ]
    assert runners
    for pid in runners:
        os.kill(pid, signal.SIGKILL)
    events.extend(call)
    result = result_of(events)
    assert result.outcome == pb.OUTCOME_ERROR
    assert "iac-runner ended without a result (killed by SIGKILL)" in result.error_msg
    wait_for(lambda: not pids_matching(f"sleep {marker}"))


def test_server_log_has_one_structured_line_per_run_start_and_end(
    fake_runner: RunnerProcess,
) -> None:
    execute(
        fake_runner.stub(), run_id="logged", tool="terraform", command="plan", args=["--lines", "3"]
    )
    events = [e for e in fake_runner.log_events() if e.get("run_id") == "logged"]
    assert [e["event"] for e in events] == ["run_start", "run_end"]
    assert events[1]["outcome"] == "succeeded" and events[1]["lines"] == 3


def test_offline_config_plan_streams_through_grpc(runner: RunnerProcess) -> None:
    (runner.workspace_root / "p").mkdir()
    (runner.workspace_root / "p" / "main.tf").write_text(OFFLINE_CONFIG)
    stub = runner.stub()
    assert result_of(execute(stub, tool="terraform", command="init", work_dir="p")).success
    events = execute(stub, tool="terraform", command="plan", work_dir="p")
    assert "1 to add" in "\n".join(line.text for line in lines_of(events))


def test_sigkill_of_the_runner_server_stops_terraform_and_its_children_at_once(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    """They lived on until terraform next printed (8 s and more): iac-runner dies with its
    parent (PR_SET_PDEATHSIG) and its guard kills the tool's process group."""
    marker = unique_seconds()
    server = start_runner(tmp_path, tool_env, "--grace", "2")
    try:
        stub = server.stub()
        (server.workspace_root / "long").mkdir()
        (server.workspace_root / "long" / "main.tf").write_text(LONG_CONFIG % marker)
        assert result_of(execute(stub, tool="terraform", command="init", work_dir="long")).success
        call = stub.Execute(
            pb.ExecuteRequest(
                tool="terraform",
                command="apply",
                work_dir="long",
                args=["-auto-approve"],
                on_disconnect=pb.CONTINUE,
            )
        )
        reader = threading.Thread(target=lambda: list(_quietly(call)), daemon=True)
        reader.start()
        sleeps = wait_for(lambda: pids_matching(f"sleep {marker}"), timeout=30)
        assert isinstance(sleeps, list)
        # terraform leads the process group its local-exec children are in.
        terraform = {os.getpgid(pid) for pid in sleeps}
        assert all("apply" in Path(f"/proc/{p}/cmdline").read_text() for p in terraform)
        server.proc.kill()
        server.proc.wait(10)
        start = time.monotonic()
        wait_for(lambda: not pids_alive([*sleeps, *terraform]), timeout=2.5)
        assert time.monotonic() - start < 2.5
        reader.join(10)
    finally:
        server.stop()


def _quietly(call: object) -> Iterator[object]:
    try:
        yield from call  # type: ignore[misc]
    except grpc.RpcError:
        return
