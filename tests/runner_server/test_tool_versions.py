"""Several binaries per tool, picked by tool_version; accept lists refuse operations."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.conftest import IAC_RUNNER
from tests.procs import BIN, execute, lines_of, make_fake_tool, result_of, start_runner


@pytest.fixture
def terraform_copy(tmp_path: Path) -> str:
    """A real copy of the installed terraform, at another path."""
    real = shutil.which("terraform")
    assert real
    copy = tmp_path / "tf-copy" / "terraform"
    copy.parent.mkdir()
    shutil.copy2(real, copy)
    return str(copy)


def test_versions_are_read_from_the_binaries_not_the_flag(
    tool_env: dict[str, str], tmp_path: Path, terraform_copy: str
) -> None:
    fake_dir = tmp_path / "old"
    fake_dir.mkdir()
    fake = make_fake_tool(fake_dir)
    env = {**tool_env, "FAKE_TF_VERSION": "1.9.8"}
    # The copy is declared as 9.9.9 but reports its real version; the fake reports 1.9.8.
    server = start_runner(
        tmp_path,
        env,
        "--tool",
        f"terraform@9.9.9={terraform_copy}",
        "--tool",
        f"terraform@1.9.8={fake}",
    )
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest())
        tools = {(t.path, t.version, t.is_default) for t in info.tools if t.name == "terraform"}
        real_version = next(t.version for t in info.tools if t.is_default)
        assert (terraform_copy, real_version, False) in tools
        assert (fake, "1.9.8", False) in tools
        assert not any(t.version == "9.9.9" for t in info.tools)
        assert "tool_version_mismatch" in server.log.read_text()

        old = execute(server.stub(), tool="terraform", command="version", tool_version="1.9.8")
        assert result_of(old).tool_version == "1.9.8"
        assert events_started(old).tool_version == "1.9.8"
        assert "Terraform v1.9.8" in "\n".join(line.text for line in lines_of(old))
        default = execute(server.stub(), tool="terraform", command="version")
        assert result_of(default).tool_version == real_version
        assert f"Terraform v{real_version}" in "\n".join(line.text for line in lines_of(default))

        with pytest.raises(grpc.RpcError) as info_err:
            execute(server.stub(), tool="terraform", command="version", tool_version="1.5.0")
        assert info_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            "terraform 1.5.0 is not on this runner; it has: 1.11.4, 1.9.8"
            in info_err.value.details()
        )
    finally:
        server.stop()


def events_started(events: list[pb.ExecuteEvent]) -> pb.Started:
    assert events[0].HasField("started")
    return events[0].started


def test_stdio_picks_the_binary_of_tool_version(tool_env: dict[str, str], tmp_path: Path) -> None:
    fake = make_fake_tool(tmp_path)
    env = {**tool_env, "FAKE_TF_VERSION": "1.9.8", "IAC_RUNNER_TOOLS": f"terraform@1.9.8={fake}"}
    request = {"tool": "terraform", "command": "version", "tool_version": "1.9.8"}
    proc = subprocess.run(
        [IAC_RUNNER], input=json.dumps(request).encode(), env=env, capture_output=True, check=False
    )
    answer = json.loads(proc.stdout)
    assert proc.returncode == 0 and "Terraform v1.9.8" in answer["output"]
    request["tool_version"] = "1.2.3"
    proc = subprocess.run(
        [IAC_RUNNER], input=json.dumps(request).encode(), env=env, capture_output=True, check=False
    )
    answer = json.loads(proc.stdout)
    assert proc.returncode == 2 and not answer["success"]
    # The listed binary's version, and the default binary's (terraform on PATH).
    assert answer["error_msg"] == (
        f"terraform 1.2.3 is not available on this runner; it has: 1.9.8, {_path_version()}"
    )


def _path_version() -> str:
    proc = subprocess.run(
        ["terraform", "version", "-json"], capture_output=True, check=True, timeout=60
    )
    return str(json.loads(proc.stdout)["terraform_version"])


@pytest.mark.parametrize("listed", [False, True], ids=["no-tools-env", "other-version-listed"])
def test_stdio_tool_version_of_the_default_binary_is_accepted(
    tool_env: dict[str, str], tmp_path: Path, listed: bool
) -> None:
    """tool_version equal to the version of the terraform on PATH runs it, as on the
    runner server, whether or not IAC_RUNNER_TOOLS lists other binaries; another version
    is refused with what the runner has."""
    version = _path_version()
    env = dict(tool_env)
    if listed:
        env["IAC_RUNNER_TOOLS"] = f"terraform@1.9.8={make_fake_tool(tmp_path)}"
    for stream in ([], ["--stream"]):
        request = {"tool": "terraform", "command": "version", "tool_version": version}
        proc = subprocess.run(
            [IAC_RUNNER, *stream],
            input=json.dumps(request).encode(),
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, proc
        last = json.loads(proc.stdout.splitlines()[-1])
        assert last["success"] is True
        if stream:
            assert last["tool_version"] == version
        else:
            assert f"Terraform v{version}" in last["output"]
    request = {"tool": "terraform", "command": "version", "tool_version": "0.0.1"}
    proc = subprocess.run(
        [IAC_RUNNER], input=json.dumps(request).encode(), env=env, capture_output=True, check=False
    )
    assert proc.returncode == 2
    have = f"1.9.8, {version}" if listed else version
    assert json.loads(proc.stdout)["error_msg"] == (
        f"terraform 0.0.1 is not available on this runner; it has: {have}"
    )


def test_plan_only_runner_refuses_state_changes(fake_env: dict[str, str], tmp_path: Path) -> None:
    server = start_runner(tmp_path, fake_env, "--accept", "plan")
    try:
        stub = server.stub()
        assert list(stub.GetInfo(pb.GetInfoRequest()).accept) == ["plan"]
        for command in ("init", "plan", "show", "version"):
            assert result_of(execute(stub, tool="terraform", command=command)).success
        for command, args in [
            ("apply", ["tfplan"]),
            ("apply", ["-auto-approve"]),
            ("destroy", []),
            ("import", ["a", "b"]),
            ("state", ["rm", "x"]),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                execute(stub, tool="terraform", command=command, args=args)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, command
            assert "it accepts: plan" in info.value.details()
        # The same through grpcurl, as an operator would try it.
        proc = subprocess.run(
            [
                str(BIN / "grpcurl"),
                "-plaintext",
                "-d",
                '{"tool":"terraform","command":"apply","args":["tfplan"]}',
                server.address,
                "iacrunner.v1.Runner/Execute",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0
        assert "PermissionDenied" in proc.stderr and "does not accept apply" in proc.stderr
    finally:
        server.stop()


def test_bad_tool_and_accept_flags_fail_fast(tool_env: dict[str, str], tmp_path: Path) -> None:
    for args, fragment in [
        (["--tool", "terraform=/x"], "must look like NAME@VERSION=PATH"),
        (["--tool", "terraform@1.0.0=/nonexistent"], "not an executable file"),
        (["--tool", "pulumi@1.0.0=/bin/true"], "unknown tool 'pulumi'"),
        (["--accept", "deploy"], "'deploy' is not an operation"),
    ]:
        proc = subprocess.run(
            [
                str(BIN / "iac-runner-server"),
                "--listen",
                "127.0.0.1:0",
                "--workspace-root",
                str(tmp_path),
                *args,
            ],
            env=tool_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert fragment in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
