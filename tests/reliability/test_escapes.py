"""Escapes from the workspace, and tools or commands that are not allowed, through each
entry point: `iac-runner` on stdin, the runner's gRPC API, and the backend's REST API
(which has no work_dir: its inputs are deployments, variables, configuration archives and
runs). The same hostile inputs get the same refusal everywhere, and nothing outside the
workspace root is read, written or deleted.

Not a sandbox: a configuration runs what it likes as the runner's user (`local-exec`);
the runner keeps *its own* file operations (unpack, work_dir, collect, cleanup) inside
the root. Isolation between teams is by runner hosts and labels.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.archives import member, tar_gz, zip_bytes
from tests.backend.platform import Backend, start_backend
from tests.conftest import IAC_RUNNER
from tests.procs import RunnerProcess, execute, make_fake_tool, result_of
from tests.reliability.harness import Counter, start_server

# work_dir values that leave the root: relative, absolute, through a symlink, by prefix.
ESCAPES = ["..", "../outside", "w/../../outside", "/etc", "{tmp}/outside", "link-out",
           "link-out/..", "{tmp}/root-twin"]  # fmt: skip
BAD_TOOLS = ["bash", "/bin/sh", "terraform; id", "Terraform", "../terraform", "python"]
BAD_COMMANDS = ["console", "login", "logout", "metadata", "-chdir=/", "rm", "sh", ""]


def _digest(directory: Path) -> str:
    """What a directory tree holds (names, link targets, contents): to show it unchanged."""
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        h.update(str(path.relative_to(directory)).encode())
        if path.is_symlink():
            h.update(str(path.readlink()).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/ (the workspace root) with w/ and link-out -> outside, outside/ holding a
    secret, and root-twin/ (a sibling whose name starts like the root's)."""
    tmp = tmp_path_factory.mktemp("escapes")
    root = tmp / "root"
    (root / "w").mkdir(parents=True)
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret").write_text("outside the root\n")
    (tmp / "root-twin").mkdir()
    (root / "link-out").symlink_to(tmp / "outside")
    # A link a tool could have left in its work_dir, pointing at the secret.
    (root / "w" / "leak").symlink_to(tmp / "outside" / "secret")
    return tmp


@pytest.fixture(scope="module")
def unchanged(world: Path) -> Iterator[None]:
    before = _digest(world / "outside"), _digest(world / "root-twin")
    yield
    assert (_digest(world / "outside"), _digest(world / "root-twin")) == before


@pytest.fixture(scope="module")
def fake_server(
    world: Path, rel_env: dict[str, str], unchanged: None
) -> Iterator[tuple[RunnerProcess, pb_grpc.RunnerStub]]:
    env = {**rel_env, "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(world)}
    server = start_server(world, env, "escapes", workspace_root=world / "root")
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, pb_grpc.RunnerStub(channel)
    finally:
        channel.close()
        server.stop()


def _stdin(world: Path, env: dict[str, str], request: dict[str, Any]) -> dict[str, object]:
    proc = subprocess.run(
        [IAC_RUNNER, "--workspace-root", str(world / "root")],
        input=json.dumps(request).encode(),
        capture_output=True,
        env={**env, "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(world)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr, proc
    answer: dict[str, object] = json.loads(proc.stdout)
    return answer


@pytest.mark.parametrize("work_dir", ESCAPES)
def test_work_dir_escapes_are_refused_on_stdin_and_grpc(
    world: Path,
    rel_env: dict[str, str],
    fake_server: tuple[RunnerProcess, pb_grpc.RunnerStub],
    work_dir: str,
) -> None:
    work_dir = work_dir.replace("{tmp}", str(world))
    request = {"tool": "terraform", "command": "plan", "work_dir": work_dir}
    answer = _stdin(world, rel_env, request)
    assert "outside the workspace root" in str(answer["error_msg"]), answer
    with pytest.raises(grpc.RpcError) as info:
        execute(fake_server[1], None, **request, cleanup=True, workspace=tar_gz())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inside the workspace root" in (info.value.details() or "")
    Counter.add("escapes refused", 2)


@pytest.mark.parametrize(
    ("tool", "command"),
    [(t, "plan") for t in BAD_TOOLS] + [("terraform", c) for c in BAD_COMMANDS],
)
def test_disallowed_tools_and_commands_are_refused_on_stdin_and_grpc(
    world: Path,
    rel_env: dict[str, str],
    fake_server: tuple[RunnerProcess, pb_grpc.RunnerStub],
    tool: str,
    command: str,
) -> None:
    request = {"tool": tool, "command": command, "work_dir": "w"}
    stdin_message = str(_stdin(world, rel_env, request)["error_msg"])
    with pytest.raises(grpc.RpcError) as info:
        execute(fake_server[1], None, **request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == stdin_message  # one validation, one message
    assert (
        "not allowed" in stdin_message
        or "unknown tool" in stdin_message
        or ("must not be empty" in stdin_message)
    )
    Counter.add("disallowed tools/commands refused", 2)


# Path arguments and variables that leave the root: (command, args, env_vars, what the
# refusal names). {out} is a directory outside the root; root/link-out points to it.
PATH_ESCAPES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("plan", ["-out={out}/tfplan"], {}, "args[0]: -out '{out}/tfplan'"),
    ("plan", ["-no-color", "-out", "{out}/tfplan"], {}, "args[1]: -out '{out}/tfplan'"),
    ("plan", ["--out={out}/tfplan"], {}, "-out '{out}/tfplan'"),
    ("plan", ["-out=../../outside/tfplan"], {}, "-out '../../outside/tfplan'"),
    ("plan", ["-out=../link-out/tfplan"], {}, "-out '../link-out/tfplan'"),
    ("plan", ["-var-file={out}/x.tfvars"], {}, "-var-file '{out}/x.tfvars'"),
    ("plan", ["-generate-config-out={out}/g.tf"], {}, "-generate-config-out"),
    ("plan", ["-state={out}/s"], {}, "-state '{out}/s'"),
    ("apply", ["-state-out={out}/s"], {}, "-state-out '{out}/s'"),
    ("apply", ["-backup={out}/b"], {}, "-backup '{out}/b'"),
    ("apply", ["-auto-approve", "{out}/tfplan"], {}, "args[1]: '{out}/tfplan'"),
    ("destroy", ["-state={out}/s"], {}, "-state"),
    ("refresh", ["-state={out}/s"], {}, "-state"),
    ("init", ["-from-module={out}"], {}, "-from-module '{out}'"),
    ("init", ["-from-module=file::{out}"], {}, "-from-module 'file::{out}'"),
    ("init", ["-plugin-dir={out}"], {}, "-plugin-dir '{out}'"),
    ("init", ["-backend-config={out}/b.hcl"], {}, "-backend-config '{out}/b.hcl'"),
    ("init", ["-test-directory={out}"], {}, "-test-directory"),
    ("fmt", ["{out}"], {}, "args[0]: '{out}'"),
    ("fmt", ["-check", "-recursive", "{out}"], {}, "args[2]: '{out}'"),
    ("validate", ["{out}"], {}, "args[0]: '{out}'"),
    ("show", ["-json", "{out}/tfplan"], {}, "args[1]: '{out}/tfplan'"),
    ("graph", ["-plan={out}/tfplan"], {}, "-plan '{out}/tfplan'"),
    ("output", ["-state={out}/s"], {}, "-state"),
    ("test", ["-test-directory={out}"], {}, "-test-directory '{out}'"),
    ("test", ["-junit-xml={out}/j.xml"], {}, "-junit-xml"),
    ("import", ["-config={out}", "a.b", "id"], {}, "-config '{out}'"),
    ("taint", ["-state={out}/s", "a.b"], {}, "-state"),
    ("state", ["push", "{out}/s.json"], {}, "args[1]: '{out}/s.json'"),
    ("state", ["mv", "-state-out={out}/s", "a.b", "a.c"], {}, "args[1]: -state-out"),
    ("state", ["rm", "-backup={out}/b", "a.b"], {}, "-backup"),
    ("providers", ["mirror", "{out}"], {}, "args[1]: '{out}'"),
    ("providers", ["lock", "-fs-mirror={out}"], {}, "-fs-mirror '{out}'"),
    ("workspace", ["new", "-state={out}/s", "x"], {}, "-state"),
    ("plan", [], {"TF_CLI_ARGS_plan": "-out={out}/tfplan"}, "env_vars['TF_CLI_ARGS_plan']: -out"),
    ("plan", [], {"TF_CLI_ARGS": "-var-file '{out}/v'"}, "env_vars['TF_CLI_ARGS']: -var-file"),
    ("state", ["push"], {"TF_CLI_ARGS_state_push": "{out}/s"}, "TF_CLI_ARGS_state_push"),
    ("plan", [], {"TF_CLI_ARGS": "-out 'unclosed"}, "cannot be split into arguments"),
    ("plan", [], {"TF_DATA_DIR": "{out}"}, "env_vars['TF_DATA_DIR'] '{out}' is outside"),
    ("plan", [], {"TF_LOG_PATH": "{out}/log"}, "env_vars['TF_LOG_PATH']"),
    ("init", [], {"TF_PLUGIN_CACHE_DIR": "{out}"}, "env_vars['TF_PLUGIN_CACHE_DIR']"),
    ("plan", [], {"TF_CLI_CONFIG_FILE": "{out}/rc"}, "env_vars['TF_CLI_CONFIG_FILE']"),
    ("plan", [], {"TERRAFORM_CONFIG": "../../outside/rc"}, "env_vars['TERRAFORM_CONFIG']"),
]
# ... and path-like arguments that stay inside (or are no paths): they run.
PATHS_INSIDE: list[tuple[str, list[str], dict[str, str]]] = [
    ("plan", ["-out=tfplan"], {}),
    ("plan", ["-out", "sub/../tfplan", "-var", "x=/etc/passwd"], {}),
    ("plan", ["-var-file={root}/w/x.tfvars"], {}),
    ("init", ["-from-module=hashicorp/consul/aws", "-backend-config=address=/x"], {}),
    ("apply", ["-backup=-", "tfplan"], {}),
    ("fmt", ["-check", "."], {}),
    ("show", ["tfplan"], {}),
    ("plan", [], {"TF_DATA_DIR": ".data", "TF_CLI_ARGS_plan": "-out=tfplan"}),
]


def _fill_paths(value: object, world: Path) -> object:
    if isinstance(value, str):
        return value.replace("{out}", str(world / "outside")).replace("{root}", str(world / "root"))
    if isinstance(value, list):
        return [_fill_paths(v, world) for v in value]
    if isinstance(value, dict):
        return {k: _fill_paths(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("command", "args", "env_vars", "fragment"),
    PATH_ESCAPES,
    ids=[f"{c} {' '.join(a)} {' '.join(e)}".strip() for c, a, e, _ in PATH_ESCAPES],
)
def test_path_arguments_outside_the_root_are_refused_on_stdin_and_grpc(
    world: Path,
    rel_env: dict[str, str],
    fake_server: tuple[RunnerProcess, pb_grpc.RunnerStub],
    command: str,
    args: list[str],
    env_vars: dict[str, str],
    fragment: str,
) -> None:
    request: dict[str, Any] = {
        "tool": "terraform",
        "command": command,
        "work_dir": "w",
        "args": _fill_paths(args, world),
        "env_vars": _fill_paths(env_vars, world),
    }
    stdin_message = str(_stdin(world, rel_env, request)["error_msg"])
    assert str(_fill_paths(fragment, world)) in stdin_message, stdin_message
    with pytest.raises(grpc.RpcError) as info:
        execute(fake_server[1], None, **request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == stdin_message  # one check, one message
    Counter.add("path arguments outside the root refused", 2)


@pytest.mark.parametrize(
    ("command", "args", "env_vars"),
    PATHS_INSIDE,
    ids=[f"{c} {' '.join(a)} {' '.join(e)}".strip() for c, a, e in PATHS_INSIDE],
)
def test_path_arguments_inside_the_root_run(
    world: Path,
    fake_server: tuple[RunnerProcess, pb_grpc.RunnerStub],
    command: str,
    args: list[str],
    env_vars: dict[str, str],
) -> None:
    events = execute(
        fake_server[1],
        None,
        tool="terraform",
        command=command,
        work_dir="w",
        args=_fill_paths(args, world),  # type: ignore[arg-type]
        env_vars=_fill_paths(env_vars, world),  # type: ignore[arg-type]
    )
    assert result_of(events).success


def test_collect_and_cleanup_stay_inside_the_work_dir(
    world: Path, fake_server: tuple[RunnerProcess, pb_grpc.RunnerStub]
) -> None:
    """A link left in the work_dir pointing out is not collected; `cleanup` removes the
    work_dir, never what its links point at."""
    events = execute(
        fake_server[1],
        tool="terraform",
        command="plan",
        work_dir="w",
        collect=["leak"],
        cleanup=True,
    )
    result = result_of(events)
    assert list(result.artifacts) == []
    assert "'leak' is outside work_dir" in result.error_msg, result.error_msg
    with pytest.raises(grpc.RpcError) as info:
        execute(fake_server[1], tool="terraform", command="plan", collect=["../../outside/secret"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (world / "root" / "w").exists()  # cleaned up ...
    assert (world / "outside" / "secret").read_text() == "outside the root\n"  # ... only it
    (world / "root" / "w").mkdir()
    (world / "root" / "w" / "leak").symlink_to(world / "outside" / "secret")


def test_chdir_smuggled_in_tf_cli_args_is_refused_by_terraform(
    rel_env: dict[str, str], tmp_path: Path
) -> None:
    """`-chdir` is refused as an argument; terraform itself refuses it in TF_CLI_ARGS."""
    server = start_server(tmp_path, rel_env, "chdir")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "main.tf").write_text('output "where" { value = "elsewhere" }\n')
    try:
        with grpc.insecure_channel(server.address) as channel:
            for name in ("TF_CLI_ARGS", "TF_CLI_ARGS_plan"):
                events = execute(
                    pb_grpc.RunnerStub(channel),
                    tool="terraform",
                    command="plan",
                    args=["-no-color"],
                    env_vars={name: f"-chdir={tmp_path / 'elsewhere'}"},
                    workspace=tar_gz({"main.tf": b'output "where" { value = "here" }\n'}),
                )
                result = result_of(events)
                text = "\n".join(line.text for e in events for line in e.output.lines)
                assert not result.success and "elsewhere" not in text.replace(
                    str(tmp_path / "elsewhere"), ""
                ), text
                assert "flag provided but not defined: -chdir" in text, text
                Counter.add("escapes refused")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_backend(rel_env: dict[str, str], world: Path, unchanged: None) -> Iterator[Backend]:
    backend = start_backend(world, rel_env, f"sqlite:///{world / 'iac.db'}")
    try:
        backend.deploy("web", {"main.tf": 'resource "terraform_data" "x" {}\n'})
        yield backend
    finally:
        backend.stop()


HOSTILE_ARCHIVES = {
    "traversal": tar_gz({"../escaped.tf": b"x", "main.tf": b""}),
    "absolute": tar_gz({"/tmp/iac-escaped-abs.tf": b"x", "main.tf": b""}),
    "symlink out": tar_gz(extra=[member("link.tf", tarfile.SYMTYPE, "/etc/passwd")]),
    "symlink up": tar_gz(extra=[member("up", tarfile.SYMTYPE, "../../outside")]),
    "hardlink out": tar_gz(extra=[member("hard.tf", tarfile.LNKTYPE, "../../outside/secret")]),
    "device": tar_gz(extra=[member("dev", tarfile.CHRTYPE)]),
    "zip symlink": zip_bytes(symlinks={"link.tf": "/etc/passwd"}),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", "/deployments", {"name": "x", "tool": "bash"}, "'terraform' or 'tofu'"),
        ("POST", "/deployments", {"name": "../x"}, "name '../x' is invalid"),
        ("POST", "/deployments", {"name": "x", "tool": "/bin/sh"}, "'terraform' or 'tofu'"),
        ("POST", "/runs", {"deployment": "web", "operation": "console"}, "'plan'"),
        ("POST", "/runs", {"deployment": "web", "operation": "plan -chdir=/"}, "'plan'"),
        ("PUT", "/deployments/web/variables/LD_PRELOAD", {"value": "/x.so", "category": "env"},
         "loader hooks"),
        ("PUT", "/deployments/web/variables/LD_LIBRARY_PATH", {"value": "/", "category": "env"},
         "loader hooks"),
        ("PUT", "/deployments/web/variables/TF_HTTP_PASSWORD", {"value": "x", "category": "env"},
         "reserved"),
        ("PUT", "/deployments/web/variables/IAC_RUNNER_TOKEN", {"value": "x", "category": "env"},
         "reserved"),
        ("PUT", "/deployments/web/variables/a%2F..%2Fb", {"value": "x"}, "Not Found"),
    ],
)  # fmt: skip
def test_api_refuses_disallowed_tools_operations_and_variables(
    api_backend: Backend, method: str, path: str, body: dict[str, object], fragment: str
) -> None:
    before = api_backend.call("GET", "/deployments/web/variables", 200)
    response = api_backend.client.request(method, path, json=body)
    assert response.status_code in (404, 422), (response.status_code, response.text)
    assert fragment in response.text, response.text
    assert api_backend.call("GET", "/deployments/web/variables", 200) == before
    Counter.add("escapes refused")


@pytest.mark.parametrize("kind", sorted(HOSTILE_ARCHIVES))
def test_api_refuses_configuration_archives_that_leave_their_directory(
    api_backend: Backend, world: Path, kind: str
) -> None:
    versions = api_backend.call("GET", "/deployments/web/config", 200)
    response = api_backend.client.post(
        "/deployments/web/config",
        content=HOSTILE_ARCHIVES[kind],
        headers={"Content-Type": "application/zip" if "zip" in kind else "application/gzip"},
    )
    assert response.status_code == 422, (kind, response.text)
    assert response.json()["detail"]
    assert api_backend.call("GET", "/deployments/web/config", 200) == versions
    assert not Path("/tmp/iac-escaped-abs.tf").exists()
    assert not (world / "escaped.tf").exists()
    Counter.add("escapes refused")
