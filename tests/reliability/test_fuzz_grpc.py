"""Hostile input on gRPC: hypothesis-made ExecuteRequests, AttachRequests, CancelRequests and
raw bytes against a running runner server.

Every call ends, within a deadline, either with a stream that ends in a `result` or with
a status code that names the problem and a message; never UNKNOWN or INTERNAL from our
code (an exception in a servicer). Afterwards the server still serves, holds no slot and
no extra process, has logged no traceback, and nothing was written outside its root.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.conftest import wait_for
from tests.procs import RunnerProcess, make_fake_tool
from tests.reliability.fuzzing import (
    ARGS,
    COMMANDS,
    ENV_NAMES,
    NON_FINITE,
    TOOLS,
    WORK_DIRS,
    bad_utf8_messages,
    fuzz_settings,
    proto_text,
)
from tests.reliability.harness import Counter, Footprint, start_server

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DEADLINE = 60.0


def _tar(files: dict[str, bytes], link: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            tar.addfile(info)
    return buf.getvalue()


WORKSPACES = [
    b"",
    _tar({"main.tf": b'resource "terraform_data" "x" {}\n'}),
    _tar({"../escape.tf": b"x"}),
    _tar({"/tmp/iac-fuzz-abs.tf": b"x"}),
    _tar({}, link=("out", "/etc")),
    _tar({"a/b/c.tf": b"x" * 1000}),
    b"\x1f\x8b\x08\x00garbage",
]
COLLECT = ["tfplan", "../x", "/etc/passwd", "a\x00b", "", "link-out/x", "main.tf", "."]


def _fake_flag(arg: str) -> bool:
    return arg.startswith("--") and not arg.startswith("--chdir")


def _not_fake_flag(arg: str) -> bool:
    return not _fake_flag(arg)


hostile_requests = st.builds(
    pb.ExecuteRequest,
    run_id=st.sampled_from(["", "fuzz-1", "a/b", "x" * 200, "..", "r-ok"]) | proto_text,
    tool=st.sampled_from(TOOLS) | proto_text,
    work_dir=st.sampled_from(WORK_DIRS) | proto_text,
    command=st.sampled_from(COMMANDS) | proto_text,
    args=st.lists(st.sampled_from(ARGS) | proto_text.filter(_not_fake_flag), max_size=5),
    env_vars=st.dictionaries(st.sampled_from(ENV_NAMES) | proto_text, proto_text, max_size=4),
    timeout=st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, 0.01, 5.0, *NON_FINITE]),
    sensitive_env=st.lists(st.sampled_from(ENV_NAMES) | proto_text, max_size=3),
    mask_values=st.lists(proto_text, max_size=3),
    workspace=st.sampled_from(WORKSPACES) | st.binary(max_size=200),
    collect=st.lists(st.sampled_from(COLLECT) | proto_text, max_size=3),
    cleanup=st.booleans(),
    on_disconnect=st.sampled_from([0, 1, 7]),
    tool_version=st.sampled_from(["", "1.11.4", "9.9.9", "1.11.4\x00"]) | proto_text,
)  # fmt: skip
# Mostly well-formed requests (so that many of them run), with a few bad values mixed in.
plausible_requests = st.builds(
    pb.ExecuteRequest,
    run_id=st.just("") | st.from_regex(r"\A[a-z0-9-]{1,12}\Z"),
    tool=st.sampled_from(["terraform", "terraform", "terraform", "tofu"]),
    work_dir=st.sampled_from(["", "", "w1", "w2/sub", "link-out", "..", "link-out/.."]),
    command=st.sampled_from(["version", "plan", "init", "show", "validate", "apply", "console"]),
    args=st.lists(st.sampled_from(["-no-color", "-json", "-out=tfplan", "-chdir=/"]), max_size=3),
    env_vars=st.dictionaries(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"), proto_text, max_size=3),
    timeout=st.sampled_from([0.0, 5.0, 0.01]),
    workspace=st.sampled_from(WORKSPACES),
    collect=st.lists(st.sampled_from(COLLECT), max_size=2),
    cleanup=st.booleans(),
    on_disconnect=st.sampled_from([0, 1]),
    tool_version=st.sampled_from(["", "", "1.11.4", "9.9.9"]),
    mask_values=st.lists(st.sampled_from(["line", "x" * 100_000, "é"]), max_size=2),
)
execute_requests = plausible_requests | hostile_requests
attach_requests = st.builds(
    pb.AttachRequest,
    run_id=st.sampled_from(["", "fuzz-1", "r-ok", "nope"]) | proto_text,
    from_seq=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
cancel_requests = st.builds(
    pb.CancelRequest,
    run_id=st.sampled_from(["", "fuzz-1", "r-ok", "nope"]) | proto_text,
    force=st.booleans(),
)


@pytest.fixture(scope="module")
def fuzz_server(
    rel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunnerProcess, grpc.Channel]]:
    tmp = tmp_path_factory.mktemp("fuzz-grpc")
    (tmp / "outside").mkdir()
    env = {**rel_env, "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(tmp)}
    server = start_server(tmp, env, "fuzz", "--max-concurrent", "4", "--default-timeout", "20")
    (server.workspace_root / "link-out").symlink_to(tmp / "outside")
    channel = grpc.insecure_channel(server.address)
    pb_grpc.RunnerStub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)  # connected
    baseline = Footprint.of(server.proc.pid)
    try:
        yield server, channel
        # The server went through it all: alive, idle, nothing left, nothing outside.
        assert server.proc.poll() is None
        stub = pb_grpc.RunnerStub(channel)
        wait_for(lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=10).active == 0, 60)
        try:
            wait_for(lambda: Footprint.of(server.proc.pid).within(baseline), 30)
        except AssertionError:
            now = Footprint.of(server.proc.pid)
            raise AssertionError((baseline, now)) from None
        # No traceback: bytes that are not a message of the method are refused by the
        # servicer's own parser (INVALID_ARGUMENT), not by grpc's.
        log = server.log.read_text()
        assert "Traceback" not in log, log
        assert list((tmp / "outside").iterdir()) == []
        assert not Path("/tmp/iac-fuzz-abs.tf").exists()
        assert not (server.workspace_root.parent / "escape.tf").exists()
    finally:
        channel.close()
        server.stop()


def _expect_clear_end(call: Any) -> None:
    try:
        events = list(call)
    except grpc.RpcError as exc:
        assert exc.code() in EXPECTED, (exc.code(), exc.details())
        assert exc.details()
        Counter.add(f"gRPC refusals: {exc.code().name}")
        return
    assert events and events[-1].HasField("result"), events[-3:]
    assert events[0].HasField("started")
    result = events[-1].result
    assert result.outcome, result
    if not result.success:
        assert result.error_msg, result
    Counter.add("gRPC results")


@given(request=execute_requests)
@fuzz_settings(100, 3000)
def test_execute_fuzz(
    fuzz_server: tuple[RunnerProcess, grpc.Channel], request: pb.ExecuteRequest
) -> None:
    Counter.add("inputs fuzzed (gRPC)")
    stub = pb_grpc.RunnerStub(fuzz_server[1])
    _expect_clear_end(stub.Execute(request, timeout=DEADLINE))


@given(request=attach_requests | cancel_requests)
@fuzz_settings(60, 1000)
def test_attach_and_cancel_fuzz(
    fuzz_server: tuple[RunnerProcess, grpc.Channel], request: Any
) -> None:
    Counter.add("inputs fuzzed (gRPC)")
    stub = pb_grpc.RunnerStub(fuzz_server[1])
    if isinstance(request, pb.AttachRequest):
        _expect_clear_end(stub.Attach(request, timeout=DEADLINE))
        return
    try:
        reply = stub.Cancel(request, timeout=DEADLINE)
    except grpc.RpcError as exc:
        assert exc.code() in EXPECTED and exc.details(), (exc.code(), exc.details())
        return
    assert reply.status in (pb.CANCEL_STATUS_CANCELING, pb.CANCEL_STATUS_ALREADY_FINISHED)


METHODS = ["Execute", "Attach", "Cancel", "GetInfo"]


@given(method=st.sampled_from(METHODS), body=st.binary(max_size=300) | bad_utf8_messages)
@fuzz_settings(60, 1000)
def test_raw_bytes_fuzz(
    fuzz_server: tuple[RunnerProcess, grpc.Channel], method: str, body: bytes
) -> None:
    """Bytes that may not even be a protobuf message, and messages whose strings are not
    UTF-8 (a lone surrogate): what does not parse is INVALID_ARGUMENT, whatever parses is
    served like any request."""
    Counter.add("inputs fuzzed (gRPC)")
    channel = fuzz_server[1]
    path = f"/iacrunner.v1.Runner/{method}"
    streaming = method in ("Execute", "Attach")
    try:
        if streaming:
            call = channel.unary_stream(path)(body, timeout=DEADLINE)
            for _ in call:
                pass
        else:
            channel.unary_unary(path)(body, timeout=DEADLINE)
    except grpc.RpcError as exc:
        assert exc.code() in EXPECTED, (exc.code(), exc.details())
        assert exc.details()
        if "Error parsing message" in (exc.details() or ""):
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            Counter.add("gRPC refusals: unparseable message")


def test_a_truncated_gzip_workspace_is_invalid_argument(
    fuzz_server: tuple[RunnerProcess, grpc.Channel],
) -> None:
    """Found by the fuzzer: gzip's EOFError escaped the archive check (UNKNOWN and a
    traceback in the server log)."""
    stub = pb_grpc.RunnerStub(fuzz_server[1])
    request = pb.ExecuteRequest(
        tool="terraform", command="version", workspace=b"\x1f\x8b\x08\x00garbage"
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Execute(request, timeout=DEADLINE))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workspace is not a tar or tar.gz archive" in info.value.details()
