"""Execute: streaming order, batching, results, validation, artifacts, masking."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.conftest import OFFLINE_CONFIG
from tests.procs import (
    RunnerProcess,
    execute,
    free_port,
    lines_of,
    make_fake_tool,
    result_of,
    start_runner,
)
from tests.runner_stdio.test_protocol import FAILING_CONFIGS


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_version_streams_started_output_result(runner: RunnerProcess) -> None:
    events = execute(runner.stub(), tool="terraform", command="version", run_id="v1")
    assert events[0].HasField("started")
    assert events[0].started.run_id == "v1"
    assert events[0].started.runner_id == "runner"
    assert events[0].started.tool_version.count(".") == 2
    text = "\n".join(line.text for line in lines_of(events))
    assert "Terraform v" in text
    result = result_of(events)
    assert result.success and result.exit_code == 0 and result.outcome == pb.OUTCOME_SUCCEEDED
    assert result.last_seq == len(lines_of(events))


def test_many_lines_arrive_in_order_without_gaps(fake_runner: RunnerProcess) -> None:
    n = 50_000
    events = execute(
        fake_runner.stub(),
        tool="terraform",
        command="plan",
        args=["--lines", str(n), "--stderr-every", "7"],
    )
    lines = lines_of(events)
    assert [line.seq for line in lines] == list(range(1, n + 1))
    assert len([e for e in events if e.HasField("output")]) < n / 10, "lines must be batched"
    stdout = [int(line.text.split()[1]) for line in lines if line.stream == "stdout"]
    stderr = [int(line.text.split()[1]) for line in lines if line.stream == "stderr"]
    assert stdout == [i for i in range(1, n + 1) if i % 7]
    assert stderr == [i for i in range(1, n + 1) if i % 7 == 0]
    assert result_of(events).last_seq == n


def test_tool_failure_is_a_result_not_an_error(fake_runner: RunnerProcess) -> None:
    events = execute(fake_runner.stub(), tool="terraform", command="plan", args=["--exit", "3"])
    result = result_of(events)
    assert not result.success
    assert result.exit_code == 3
    assert result.outcome == pb.OUTCOME_FAILED
    assert "exited with code 3" in result.error_msg


def test_full_lifecycle_with_workspace_archive_and_artifacts(runner: RunnerProcess) -> None:
    stub = runner.stub()
    archive = tar_gz({"main.tf": OFFLINE_CONFIG.encode()})
    init = execute(stub, tool="terraform", command="init", work_dir="run-7", workspace=archive)
    assert result_of(init).success, result_of(init).error_msg
    plan = execute(
        stub,
        tool="terraform",
        command="plan",
        work_dir="run-7",
        args=["-out=tfplan"],
        env_vars={"TF_VAR_greeting": "from-grpc"},
        collect=["tfplan", "missing.txt"],
    )
    result = result_of(plan)
    assert result.success
    assert [a.path for a in result.artifacts] == ["tfplan"]
    assert result.artifacts[0].content[:2] == b"PK"  # a plan file is a zip
    assert "'missing.txt' not found" in result.error_msg
    # The plan's JSON goes to a file, not to the output (it holds every value in the clear).
    show = execute(
        stub,
        tool="terraform",
        command="show",
        work_dir="run-7",
        args=["-json", "tfplan"],
        env_vars={"TF_VAR_greeting": "from-grpc"},
        sensitive_env=["TF_VAR_greeting"],
        stdout_file="tfplan.json",
        collect=["tfplan.json"],
    )
    assert result_of(show).success, result_of(show).error_msg
    assert not [line for line in lines_of(show) if line.stream == "stdout"]
    document = json.loads(result_of(show).artifacts[0].content)
    assert document["format_version"] and document["resource_changes"]
    assert os.stat(runner.workspace_root / "run-7" / "tfplan.json").st_mode & 0o777 == 0o600
    # The apply runs only on the plan that was approved: its digest is checked first.
    digest = hashlib.sha256(result.artifacts[0].content).hexdigest()
    with pytest.raises(grpc.RpcError) as refused:
        execute(
            stub, tool="terraform", command="apply", work_dir="run-7", args=["tfplan"],
            verify_sha256={"tfplan": "0" * 64},
        )  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"its SHA-256 is {digest}, expected {'0' * 64}" in refused.value.details()
    apply = execute(
        stub, tool="terraform", command="apply", work_dir="run-7", args=["tfplan"], cleanup=True,
        verify_sha256={"tfplan": digest.upper()},
    )  # fmt: skip
    assert result_of(apply).success
    assert "provisioned from-grpc" in "\n".join(line.text for line in lines_of(apply))
    assert not (runner.workspace_root / "run-7").exists(), "cleanup removes the work_dir"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"tool": "pulumi", "command": "up"}, "unknown tool 'pulumi'"),
        ({"tool": "terraform", "command": "console"}, "'console' is not allowed"),
        ({"tool": "terraform", "command": ""}, "field 'command' must not be empty"),
        (
            {"tool": "terraform", "command": "plan", "work_dir": "../../etc"},
            "inside the workspace root",
        ),
        ({"tool": "terraform", "command": "plan", "work_dir": "/etc"}, "inside the workspace root"),
        (
            {"tool": "terraform", "command": "plan", "env_vars": {"LD_PRELOAD": "x"}},
            "'LD_PRELOAD' is not allowed",
        ),
        (
            {"tool": "terraform", "command": "plan", "env_vars": {"1BAD": "x"}},
            "not a valid identifier",
        ),
        ({"tool": "terraform", "command": "plan", "args": ["-chdir=/"]}, "is not allowed"),
        ({"tool": "terraform", "command": "plan", "timeout": -1}, "'timeout'"),
        ({"tool": "terraform", "command": "plan", "sensitive_env": ["NOPE"]}, "not in env_vars"),
        ({"tool": "terraform", "command": "plan", "collect": ["../x"]}, "collect path"),
        ({"tool": "terraform", "command": "show", "stdout_file": "../x"}, "'stdout_file'"),
        ({"tool": "terraform", "command": "show", "stdout_file": ".hidden"}, "'stdout_file'"),
        (
            {"tool": "terraform", "command": "apply", "verify_sha256": {"../tfplan": "0" * 64}},
            "verify_sha256 path",
        ),
        (
            {"tool": "terraform", "command": "apply", "verify_sha256": {"tfplan": "zz"}},
            "64 hex digits",
        ),
        ({"tool": "terraform", "command": "plan", "run_id": "a/b"}, "run_id"),
        ({"tool": "terraform", "command": "plan", "workspace": b"not a tar"}, "not a tar"),
    ],
)
def test_bad_requests_are_invalid_argument(
    fake_runner: RunnerProcess, fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        execute(fake_runner.stub(), **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


def _evil_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if kind == "traversal":
            info = tarfile.TarInfo("../escaped.tf")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tmp/escaped-abs.tf")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        elif kind == "symlink":
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("hard")
            info.type = tarfile.LNKTYPE
            info.linkname = "../../outside"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("dev")
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif kind == "bomb":
            # 200 MiB of zeros compresses to ~200 KiB; the cap is 64 MiB.
            info = tarfile.TarInfo("zeros")
            info.size = 200 * 1024 * 1024

            class Zeros(io.RawIOBase):
                def __init__(self) -> None:
                    self.left = info.size

                def readinto(self, b):  # type: ignore[no-untyped-def]
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n

            tar.addfile(info, Zeros())
    return buf.getvalue()


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("traversal", "refused"),
        ("absolute", "refused"),
        ("symlink", "refused"),
        ("hardlink", "refused"),
        ("device", "is a device"),
        ("bomb", "more than"),
    ],
)
def test_hostile_archives_are_refused(
    fake_runner: RunnerProcess, tmp_path: Path, kind: str, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        execute(
            fake_runner.stub(),
            tool="terraform",
            command="plan",
            work_dir=f"evil-{kind}",
            workspace=_evil_tar(kind),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()
    assert not (fake_runner.workspace_root.parent / "escaped.tf").exists()
    assert not Path("/tmp/escaped-abs.tf").exists()
    # Nothing was left running or reserved: the runner still has all its slots.
    info_reply = fake_runner.stub().GetInfo(pb.GetInfoRequest())
    assert info_reply.active == 0


def test_sensitive_values_are_masked(fake_runner: RunnerProcess) -> None:
    events = execute(
        fake_runner.stub(),
        tool="terraform",
        command="plan",
        args=["--echo-env", "TF_VAR_password", "--echo-env", "PUBLIC"],
        env_vars={"TF_VAR_password": "hunter2-secret", "PUBLIC": "visible"},
        sensitive_env=["TF_VAR_password"],
    )
    texts = [line.text for line in lines_of(events)]
    assert "TF_VAR_password=***" in texts
    assert "PUBLIC=visible" in texts
    assert "hunter2-secret" not in str(events)
    assert "hunter2-secret" not in fake_runner.log.read_text()


def test_get_info_reports_labels_tools_and_load(tool_env: dict[str, str], tmp_path: Path) -> None:
    from tests.procs import start_runner

    server = start_runner(
        tmp_path,
        tool_env,
        "--label",
        "provider=aws",
        "--label",
        "env=prod",
        "--max-concurrent",
        "3",
    )
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest())
        assert dict(info.labels) == {"provider": "aws", "env": "prod"}
        assert info.max_concurrent == 3 and info.active == 0 and not info.draining
        terraform = [t for t in info.tools if t.name == "terraform"]
        assert terraform and terraform[0].version.startswith("1.") and terraform[0].path
    finally:
        server.stop()


@pytest.mark.parametrize("case", list(FAILING_CONFIGS))
def test_failed_result_carries_terraform_s_first_error_line(
    runner: RunnerProcess, case: str
) -> None:
    port = str(free_port())
    config, command, error = (x.replace("{port}", port) for x in FAILING_CONFIGS[case])
    events = execute(
        runner.stub(),
        tool="terraform",
        command=command,
        work_dir=f"fail-{case}",
        workspace=tar_gz({"main.tf": config.encode()}),
    )
    result = result_of(events)
    assert not result.success and result.outcome == pb.OUTCOME_FAILED
    assert result.error_msg.startswith(f"terraform {command} exited with code 1: {error}")


MODES_CONFIG = """\
module "local" {
  source = "./mod"
}

resource "terraform_data" "x" {
  input = "modes"
  provisioner "local-exec" {
    command = "echo made > made-by-local-exec"
  }
}
"""


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_work_dirs_are_0700_and_what_a_run_writes_0600(
    runner: RunnerProcess, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """A live plan holds secrets: the work dir (and the parents the runner creates) are
    0700; unpacked files, the saved plan, the state, .terraform and what local-exec
    writes are the runner user's alone, whatever the archive's modes say."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data, mode in [
            ("main.tf", MODES_CONFIG.encode(), 0o666),
            ("scripts/run.sh", b"#!/bin/sh\n", 0o775),
            ("mod/main.tf", b"", 0o644),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    stub = runner.stub()
    common: dict[str, Any] = {"tool": "terraform", "work_dir": "modes/nested/run"}
    assert result_of(execute(stub, command="init", workspace=archive.getvalue(), **common)).success
    plan = result_of(
        execute(stub, command="plan", args=["-out=tfplan"], collect=["tfplan"], **common)
    )
    assert plan.success and plan.artifacts[0].path == "tfplan"
    assert result_of(execute(stub, command="apply", args=["tfplan"], **common)).success
    root = runner.workspace_root
    work = root / "modes/nested/run"
    expected = {
        root / "modes": 0o700,
        root / "modes/nested": 0o700,
        work: 0o700,
        work / "main.tf": 0o600,
        work / "scripts/run.sh": 0o700,
        work / "tfplan": 0o600,
        work / "terraform.tfstate": 0o600,
        work / ".terraform": 0o700,
        work / ".terraform/modules/modules.json": 0o600,
        work / "made-by-local-exec": 0o600,
    }
    assert {p.relative_to(root).as_posix(): oct(_mode(p)) for p in expected} == {
        p.relative_to(root).as_posix(): oct(m) for p, m in expected.items()
    }

    # iac-runner on its own: what the tool writes is private too.
    from tests.runner_stdio.helpers import run_runner

    stdio_work = tmp_path / "stdio"
    (stdio_work / "mod").mkdir(parents=True)
    (stdio_work / "mod/main.tf").write_text("")
    (stdio_work / "main.tf").write_text(MODES_CONFIG)
    for command, args in [("init", []), ("plan", ["-out=tfplan"])]:
        request = {"tool": "terraform", "command": command, "args": args,
                   "work_dir": str(stdio_work)}  # fmt: skip
        assert run_runner(request, tool_env).status == 0
    assert oct(_mode(stdio_work / "tfplan")) == oct(0o600)
    assert oct(_mode(stdio_work / ".terraform")) == oct(0o700)


@pytest.fixture(scope="module")
def one_fake_runner(
    tf_cli_config: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunnerProcess]:
    """One runner server (fake terraform) for the many small refusals below."""
    tmp = tmp_path_factory.mktemp("refusals")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.update(TF_CLI_CONFIG_FILE=tf_cli_config, IAC_RUNNER_TERRAFORM_BIN=make_fake_tool(tmp))
    server = start_runner(tmp, env)
    yield server
    server.stop()


def _string_fields(message: Any) -> list[str]:
    """Every string field of a request message, a map's key and value as two."""
    names = []
    for f in message.DESCRIPTOR.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            names += [f"{f.name}.key", f"{f.name}.value"]
        elif f.type == f.TYPE_STRING:
            names.append(f.name)
    return names


STRING_FIELDS = [
    (kind, name)
    for kind in (pb.ExecuteRequest, pb.AttachRequest, pb.CancelRequest)
    for name in _string_fields(kind)
]


def _with(kind: Any, name: str, value: str) -> Any:
    base: dict[str, Any] = {"run_id": "r"}
    if kind is pb.ExecuteRequest:
        base = {"tool": "terraform", "command": "version", "env_vars": {"A": "1"}}
    field, _, part = name.partition(".")
    if part == "key":
        base[field] = {value: "1"}
    elif part == "value":
        base[field] = {"A": value}
    elif kind.DESCRIPTOR.fields_by_name[field].is_repeated:
        base[field] = [value]
    else:
        base[field] = value
    return kind(**base)


def _call(stub: Any, request: Any) -> None:
    if isinstance(request, pb.ExecuteRequest):
        list(stub.Execute(request))
    elif isinstance(request, pb.AttachRequest):
        list(stub.Attach(request))
    else:
        stub.Cancel(request)


@pytest.mark.parametrize(
    ("kind", "name"), STRING_FIELDS, ids=[f"{k.__name__}.{n}" for k, n in STRING_FIELDS]
)
def test_nul_in_any_string_field_is_invalid_argument(
    one_fake_runner: RunnerProcess, kind: Any, name: str
) -> None:
    """A NUL gave UNKNOWN and a traceback for work_dir (realpath ran before the check):
    every string of every request is checked first."""
    with pytest.raises(grpc.RpcError) as info:
        _call(one_fake_runner.stub(), _with(kind, name, "a\x00b"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "must not contain NUL bytes" in (info.value.details() or "")
    assert name.split(".")[0] in (info.value.details() or "")
    assert "Traceback" not in one_fake_runner.log.read_text()


def _utf8_bad(kind: Any, name: str) -> bytes:
    """The request with `name`'s string as bytes that are no UTF-8: a lone surrogate."""
    marker = "MARKER-1234"
    data: bytes = _with(kind, name, marker).SerializeToString()
    bad = b"\xed\xa0\x80"  # U+D800 as CESU-8 writes it
    # Same length, so the length prefix stays right.
    return data.replace(marker.encode(), bad + b"-" * (len(marker) - len(bad)))


@pytest.mark.parametrize(
    ("kind", "name"), STRING_FIELDS, ids=[f"{k.__name__}.{n}" for k, n in STRING_FIELDS]
)
def test_lone_surrogate_in_any_string_field_is_invalid_argument(
    one_fake_runner: RunnerProcess, kind: Any, name: str
) -> None:
    """A protobuf client cannot put a lone surrogate in a string; raw bytes can (bad
    UTF-8): refused with the reason, not UNKNOWN with grpc's traceback in the log."""
    method = {pb.ExecuteRequest: "Execute", pb.AttachRequest: "Attach"}.get(kind, "Cancel")
    path = f"/iacrunner.v1.Runner/{method}"
    with one_fake_runner.channel() as channel, pytest.raises(grpc.RpcError) as info:
        if method == "Cancel":
            channel.unary_unary(path)(_utf8_bad(kind, name), timeout=30)
        else:
            list(channel.unary_stream(path)(_utf8_bad(kind, name), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "bad UTF-8" in (info.value.details() or "")
    assert "Traceback" not in one_fake_runner.log.read_text()


TIMEOUTS = [1e12, 86401, float("nan"), float("inf"), float("-inf"), -1.0]


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=[repr(t) for t in TIMEOUTS])
def test_bad_timeouts_are_refused_alike_on_grpc_and_stdio(
    one_fake_runner: RunnerProcess, fake_env: dict[str, str], timeout: float
) -> None:
    """A timeout over the maximum was a failed result on gRPC and a refusal on stdio:
    both refuse now, with one message."""
    from tests.runner_stdio.helpers import EXIT_INVALID, run_runner

    with pytest.raises(grpc.RpcError) as info:
        execute(one_fake_runner.stub(), tool="terraform", command="version", timeout=timeout)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    body = json.dumps({"tool": "terraform", "command": "version", "timeout": timeout})
    result = run_runner(body.encode(), fake_env)
    assert result.status == EXIT_INVALID
    assert info.value.details() == result.response["error_msg"]
    assert "'timeout'" in result.response["error_msg"]


def test_a_missing_workspace_root_is_created(fake_runner: RunnerProcess) -> None:
    """The root is made when the first work dir needs it (it was, before work dirs were
    made 0700 one level at a time)."""
    fake_runner.workspace_root.rmdir()
    events = execute(fake_runner.stub(), tool="terraform", command="plan", work_dir="a/b")
    assert result_of(events).success
    assert _mode(fake_runner.workspace_root / "a" / "b") == 0o700


def test_every_outcome_iac_runner_says_has_its_enum_value() -> None:
    from runner_server.service import OUTCOMES, outcome_name

    named = set(pb.Outcome.DESCRIPTOR.values_by_name) - {"OUTCOME_UNSPECIFIED"}
    assert {pb.Outcome.Name(v) for v in OUTCOMES.values()} == named
    assert all(outcome_name(value) == text for text, value in OUTCOMES.items())
