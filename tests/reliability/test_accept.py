"""Accept lists: every subcommand (and sub-subcommand) of terraform and tofu against every
accept list, through gRPC, grpcurl (a slice) and `iac-runner --accept` on stdin.

The table below is the specification, written out by hand: what each command needs
(read-only, plan, apply, destroy, apply-or-destroy for a saved plan, or unknown). A
runner runs a command when it is read-only, or the runner accepts what it needs; an
unknown subcommand is refused everywhere (INVALID_ARGUMENT, stdio exit 2), a command
the runner does not accept is PERMISSION_DENIED (stdio exit 2). The tool is a shell
script that succeeds at everything: what is tested is the runner's decision.

Then two attacks, with real terraform: `terraform test` whose run block applies a
`local-exec`, and `fmt` of a directory outside the root, on a plan-only runner.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.archives import tar_gz
from tests.conftest import GRPCURL, IAC_RUNNER
from tests.procs import RunnerProcess, execute, result_of
from tests.reliability.harness import SOAK, Counter, start_server

R, P, A, D, AD, U = "read", "plan", "apply", "destroy", "apply|destroy", "unknown"
# (command, args, env_vars, what it needs)
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("version", [], {}, R),
    ("version", ["-json"], {}, R),
    ("init", [], {}, R),
    ("init", ["-upgrade", "-reconfigure"], {}, R),
    ("init", ["-migrate-state"], {}, A),
    ("init", ["-force-copy"], {}, A),
    ("get", [], {}, R),
    ("validate", ["-json"], {}, R),
    ("fmt", [], {}, A),
    ("fmt", ["sub"], {}, A),
    ("fmt", ["-check"], {}, R),
    ("fmt", ["-check", "-diff", "-list=true", "-recursive", "-no-color"], {}, R),
    ("fmt", ["-check=false"], {}, A),
    ("fmt", ["-check", "-write=true"], {}, A),
    ("fmt", [], {"TF_CLI_ARGS_fmt": "-check"}, R),
    ("graph", [], {}, R),
    ("show", [], {}, R),
    ("show", ["-json", "tfplan"], {}, R),
    ("output", ["-json"], {}, R),
    ("modules", [], {}, R),
    ("providers", [], {}, R),
    ("providers", ["lock"], {}, R),
    ("providers", ["mirror", "mirror-dir"], {}, R),
    ("providers", ["schema", "-json"], {}, R),
    ("providers", ["nonsense"], {}, U),
    ("metadata", ["functions", "-json"], {}, R),
    ("metadata", [], {}, U),
    ("metadata", ["nonsense"], {}, U),
    ("plan", [], {}, P),
    ("plan", ["-destroy", "-out=tfplan"], {}, P),
    ("plan", ["-refresh-only"], {}, P),
    ("apply", [], {}, A),
    ("apply", ["-auto-approve"], {}, A),
    ("apply", ["-refresh-only", "-auto-approve"], {}, A),
    ("apply", ["-destroy"], {}, D),
    ("apply", ["--destroy=true", "-auto-approve"], {}, D),
    ("apply", ["-destroy=false"], {}, A),
    ("apply", [], {"TF_CLI_ARGS_apply": "-destroy"}, D),
    ("apply", [], {"TF_CLI_ARGS": "-auto-approve -destroy"}, D),
    ("apply", ["tfplan"], {}, AD),
    ("apply", ["-auto-approve", "tfplan"], {}, AD),
    ("destroy", [], {}, D),
    ("destroy", ["-auto-approve"], {}, D),
    ("refresh", [], {}, A),
    ("import", ["a.b", "id"], {}, A),
    ("taint", ["a.b"], {}, A),
    ("untaint", ["a.b"], {}, A),
    ("force-unlock", ["-force", "lock-id"], {}, A),
    ("test", [], {}, A),
    ("test", ["-filter=x.tftest.hcl"], {}, A),
    ("state", ["list"], {}, R),
    ("state", ["show", "a.b"], {}, R),
    ("state", ["pull"], {}, R),
    ("state", ["mv", "a.b", "a.c"], {}, A),
    ("state", ["rm", "a.b"], {}, A),
    ("state", ["push", "state.json"], {}, A),
    ("state", ["replace-provider", "a", "b"], {}, A),
    ("state", [], {}, U),
    ("state", ["nonsense"], {}, U),
    ("state", ["-help"], {}, U),
    ("workspace", ["list"], {}, R),
    ("workspace", ["show"], {}, R),
    ("workspace", ["select", "default"], {}, R),
    ("workspace", ["select", "-or-create", "other"], {}, A),
    ("workspace", ["new", "other"], {}, A),
    ("workspace", ["delete", "-force", "other"], {}, A),
    ("workspace", ["nonsense"], {}, U),
    ("console", [], {}, U),
    ("login", [], {}, U),
    ("logout", [], {}, U),
    ("env", ["list"], {}, U),
    ("rpcapi", [], {}, U),
    ("stacks", [], {}, U),
]
ACCEPTS = [["plan"], ["apply"], ["destroy"], ["plan", "apply"], ["plan", "destroy"],
           ["apply", "destroy"], []]  # fmt: skip
# iac-runner's own check (the second line of defence: the runner server refuses first) on
# stdin: in the quick profile against a plan-only and a destroy-only list (between them
# every kind of refusal, and a saved plan accepted by a runner without "apply"), all of
# them in the soak profile.
STDIO_ACCEPTS = [a for a in ACCEPTS if SOAK or a in (["plan"], ["destroy"])]
FAKE_TOOL = """#!/bin/sh
if [ "$1" = version ]; then echo '{"terraform_version": "1.11.4"}'; fi
exit 0
"""


def expected(needs: str, accept: list[str]) -> str:
    """ok, permission (PERMISSION_DENIED) or invalid (INVALID_ARGUMENT)."""
    if needs == U:
        return "invalid"
    if needs == R or not accept or needs in accept:
        return "ok"
    if needs == AD and (A in accept or D in accept):
        return "ok"
    return "permission"


def _id(case: tuple[str, list[str], dict[str, str], str]) -> str:
    command, args, env, _ = case
    return " ".join([command, *args, *(f"{k}={v}" for k, v in env.items())])


@pytest.fixture(scope="module")
def tool(module_tmp: Path) -> Path:
    path = module_tmp / "terraform"
    path.write_text(FAKE_TOOL)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def servers(
    rel_env: dict[str, str], module_tmp: Path, tool: Path
) -> Iterator[dict[str, RunnerProcess]]:
    env = {**rel_env, "IAC_RUNNER_TERRAFORM_BIN": str(tool)}
    started: dict[str, RunnerProcess] = {}
    try:
        for accept in ACCEPTS:
            name = "-".join(accept) or "all"
            flags = [x for op in accept for x in ("--accept", op)]
            started[name] = start_server(
                module_tmp, env, f"accept-{name}", *flags, "--max-concurrent", "4"
            )
        yield started
    finally:
        for server in started.values():
            server.stop()


def _grpc_outcome(
    stub: pb_grpc.RunnerStub, command: str, args: list[str], env: dict[str, str]
) -> str:
    try:
        events = execute(stub, None, tool="terraform", command=command, args=args,
                         env_vars=env, work_dir="w")  # fmt: skip
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.PERMISSION_DENIED:
            assert "does not accept" in (exc.details() or ""), exc.details()
            return "permission"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return "invalid"
        return f"{code.name}: {exc.details()}"
    result = result_of(events)
    return "ok" if result.success else f"failed: {result.error_msg}"


def _stdio_outcome(
    env: dict[str, str], root: Path, accept: list[str], command: str, args: list[str],
    env_vars: dict[str, str],
) -> str:  # fmt: skip
    request = {"tool": "terraform", "command": command, "args": args, "env_vars": env_vars,
               "work_dir": "w"}  # fmt: skip
    flags = ["--accept", ",".join(accept)] if accept else []
    proc = subprocess.run(
        [IAC_RUNNER, "--workspace-root", str(root), *flags],
        input=json.dumps(request).encode(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    answer = json.loads(proc.stdout)
    if proc.returncode == 0:
        return "ok"
    if proc.returncode == 2 and "does not accept" in answer["error_msg"]:
        return "permission"
    if proc.returncode == 2 and "not allowed" in answer["error_msg"]:
        return "invalid"
    return f"exit {proc.returncode}: {answer['error_msg']}"


@pytest.mark.parametrize("accept", ACCEPTS, ids=["-".join(a) or "all" for a in ACCEPTS])
def test_every_subcommand_against_an_accept_list_through_grpc_and_stdio(
    servers: dict[str, RunnerProcess],
    rel_env: dict[str, str],
    module_tmp: Path,
    tool: Path,
    accept: list[str],
) -> None:
    server = servers["-".join(accept) or "all"]
    (server.workspace_root / "w").mkdir(exist_ok=True)
    stdio_root = module_tmp / f"stdio-root-{'-'.join(accept) or 'all'}"
    (stdio_root / "w").mkdir(parents=True, exist_ok=True)
    stdio_env = {**rel_env, "IAC_RUNNER_TERRAFORM_BIN": str(tool)}
    want = {_id(case): expected(case[3], accept) for case in CASES}
    with grpc.insecure_channel(server.address) as channel, ThreadPoolExecutor(4) as pool:
        stub = pb_grpc.RunnerStub(channel)
        outcomes = pool.map(lambda c: _grpc_outcome(stub, *c[:3]), CASES)
        got = dict(zip(want, outcomes, strict=True))
        assert {k: v for k, v in got.items() if v != want[k]} == {}
        Counter.add("subcommands x accept lists (gRPC)", len(CASES))
        if accept in STDIO_ACCEPTS:
            outcomes = pool.map(
                lambda c: _stdio_outcome(stdio_env, stdio_root, accept, *c[:3]), CASES
            )
            got = dict(zip(want, outcomes, strict=True))
            assert {k: v for k, v in got.items() if v != want[k]} == {}
            Counter.add("subcommands x accept lists (stdio)", len(CASES))
    info = server.stub().GetInfo(pb.GetInfoRequest())
    assert list(info.accept) == accept and info.active == 0


# A slice through grpcurl, as an operator would try it on a plan-only runner.
GRPCURL_SLICE = [
    ('{"tool":"terraform","command":"apply","args":["-auto-approve"]}', "PermissionDenied"),
    ('{"tool":"terraform","command":"test"}', "PermissionDenied"),
    ('{"tool":"terraform","command":"fmt"}', "PermissionDenied"),
    ('{"tool":"terraform","command":"state","args":["rm","a.b"]}', "PermissionDenied"),
    ('{"tool":"terraform","command":"workspace","args":["new","x"]}', "PermissionDenied"),
    ('{"tool":"terraform","command":"apply","args":["tfplan"]}', "PermissionDenied"),
    ('{"tool":"terraform","command":"state","args":["nonsense"]}', "InvalidArgument"),
    ('{"tool":"terraform","command":"fmt","args":["-check"],"work_dir":"w"}', '"success": true'),
    ('{"tool":"terraform","command":"state","args":["list"],"work_dir":"w"}', '"success": true'),
    ('{"tool":"terraform","command":"plan","work_dir":"w"}', '"success": true'),
]


@pytest.mark.parametrize(("body", "answer"), GRPCURL_SLICE)
def test_plan_only_runner_through_grpcurl(
    servers: dict[str, RunnerProcess], body: str, answer: str
) -> None:
    server = servers["plan"]
    (server.workspace_root / "w").mkdir(exist_ok=True)
    proc = subprocess.run(
        [GRPCURL, "-plaintext", "-d", body, server.address, "iacrunner.v1.Runner/Execute"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    Counter.add("subcommands x accept lists (grpcurl)")


TEST_CONFIG = """\
resource "terraform_data" "probe" {
  input = "probe"
  provisioner "local-exec" {
    command = "touch %s"
  }
}
"""
TEST_FILE = 'run "applies" {\n  command = apply\n}\n'
UNFORMATTED = 'resource "terraform_data" "x" {\ninput="unformatted"\n}\n'


def test_plan_only_runner_refuses_terraform_test_and_fmt_outside_the_root(
    rel_env: dict[str, str], module_tmp: Path
) -> None:
    """The attacks, with real terraform: on a plan-only runner `terraform test` (whose
    run block applies a local-exec) and `fmt DIR` outside the root are refused and change
    nothing; on a runner that accepts apply the same test does run (the probe works)."""
    marker = module_tmp / "applied-by-test"
    outside = module_tmp / "outside-config"
    outside.mkdir()
    (outside / "main.tf").write_text(UNFORMATTED)
    workspace = tar_gz({"main.tf": TEST_CONFIG % marker, "tests/t.tftest.hcl": TEST_FILE})
    plan_only = start_server(module_tmp, rel_env, "real-plan", "--accept", "plan")
    applier = start_server(module_tmp, rel_env, "real-apply", "--accept", "apply")
    try:
        stub = plan_only.stub()
        assert result_of(execute(stub, None, tool="terraform", command="init",
                                 work_dir="t", workspace=workspace)).success  # fmt: skip
        for command, args, code in [
            ("test", [], grpc.StatusCode.PERMISSION_DENIED),
            ("fmt", [str(outside)], grpc.StatusCode.INVALID_ARGUMENT),
            ("fmt", ["-check", str(outside)], grpc.StatusCode.INVALID_ARGUMENT),
            ("fmt", [], grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                execute(stub, None, tool="terraform", command=command, args=args, work_dir="t")
            assert info.value.code() == code, (command, args, info.value.details())
        assert not marker.exists()
        assert (outside / "main.tf").read_text() == UNFORMATTED
        # fmt -check inside the work dir is read-only: it runs (and finds nothing to fix).
        assert result_of(execute(stub, None, tool="terraform", command="fmt",
                                 args=["-check"], work_dir="t")).success  # fmt: skip

        stub = applier.stub()
        assert result_of(execute(stub, None, tool="terraform", command="init",
                                 work_dir="t", workspace=workspace)).success  # fmt: skip
        result = result_of(execute(stub, None, tool="terraform", command="test", work_dir="t"))
        assert result.success, result
        assert marker.exists()
    finally:
        plan_only.stop()
        applier.stop()
