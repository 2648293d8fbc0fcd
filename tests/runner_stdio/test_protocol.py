"""The `iac-runner` wire protocol: the seed's example, the response's shape, the
environment the tool gets, and a table of bad requests that must each be refused
with a specific message, exit status 2 and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IAC_RUNNER, pids_matching
from tests.procs import free_port
from tests.runner_stdio.helpers import (
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_TOOL_FAILED,
    RESPONSE_FIELDS,
    assert_no_traceback,
    check_response,
    check_stream,
    fake_tool,
    run_runner,
    unique_seconds,
)

SEED_REQUEST = {
    "tool": "terraform",
    "work_dir": "/tmp",
    "command": "version",
    "args": [],
    "env_vars": {},
    "timeout": 5,
}


def test_seed_example(tool_env):
    """The seed's own case, exactly as the README shows it."""
    result = run_runner(SEED_REQUEST, tool_env)
    assert result.status == EXIT_OK, result
    assert_no_traceback(result)
    response = result.response
    check_response(response)
    assert list(response) == RESPONSE_FIELDS
    assert response["success"] is True
    assert "Terraform v" in response["output"]
    assert response["exit_code"] == 0
    assert response["error_msg"] == ""
    assert result.stderr == b""


def test_seed_example_as_the_readme_writes_it(tool_env):
    """`echo '...' | iac-runner`: the request followed by a newline, as echo sends it."""
    result = run_runner((json.dumps(SEED_REQUEST, separators=(",", ":")) + "\n").encode(), tool_env)
    assert result.status == EXIT_OK
    assert result.response["success"] is True


def test_response_is_one_json_line_written_with_ensure_ascii_false(tool_env, tmp_path):
    """The response's bytes are exactly json.dumps(response, ensure_ascii=False) + newline,
    also for non-ASCII and control characters the tool prints."""
    tool = fake_tool(
        tmp_path,
        'import sys\nsys.stdout.write("caf\\u00e9 \\"quoted\\" tab\\there \\\\ back\\n")\n'
        'sys.stdout.write("\\u2603 \\x1b[1mbold\\x1b[0m\\n")\n',
    )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    result = run_runner({"tool": "terraform", "command": "version"}, env)
    assert result.status == EXIT_OK
    text = result.stdout.decode()
    response = json.loads(text)
    assert text == json.dumps(response, ensure_ascii=False) + "\n"
    assert response["output"] == 'café "quoted" tab\there \\ back\n☃ \x1b[1mbold\x1b[0m\n'


def test_stream_mode_seed_example(tool_env):
    result = run_runner(SEED_REQUEST, tool_env, "--stream")
    assert result.status == EXIT_OK
    assert_no_traceback(result)
    lines = check_stream(result.events)
    assert any(line.startswith("Terraform v") for _, _, line in lines)
    res = result.result
    assert res["success"] is True and res["exit_code"] == 0 and res["error_msg"] == ""
    assert res["outcome"] == "succeeded"


def test_work_dir_may_be_omitted(tool_env, tmp_path):
    """Without work_dir the tool runs in a fresh temporary directory, removed afterwards."""
    tool = fake_tool(tmp_path, "import os\nprint(os.getcwd())\n")
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    result = run_runner({"tool": "terraform", "command": "version"}, env)
    assert result.status == EXIT_OK
    cwd = result.response["output"].strip()
    assert os.path.basename(cwd).startswith("iac-runner-")
    assert not os.path.exists(cwd)


def test_stdout_file_takes_the_tool_s_stdout_and_never_follows_a_link(tool_env, tmp_path):
    """stdout_file: the tool's stdout, unmasked, in a 0600 file of work_dir instead of the
    output (stderr still streams); a symlink in its place is refused, not written through."""
    tool = fake_tool(
        tmp_path, "import sys\nprint('{\"k\": \"s3cret\"}')\nprint('warn', file=sys.stderr)\n"
    )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    work = tmp_path / "work"
    work.mkdir()
    request = {
        "tool": "terraform", "command": "show", "work_dir": str(work), "stdout_file": "out.json",
        "env_vars": {"X": "s3cret"}, "sensitive_env": ["X"],
    }  # fmt: skip
    result = run_runner(request, env)
    assert result.status == EXIT_OK, result.response
    assert result.response["output"] == "warn\n"
    assert json.loads((work / "out.json").read_text()) == {"k": "s3cret"}
    assert (work / "out.json").stat().st_mode & 0o777 == 0o600
    (work / "out.json").unlink()
    target = tmp_path / "target"
    target.write_text("untouched")
    (work / "out.json").symlink_to(target)
    refused = run_runner(request, env)
    assert refused.status == EXIT_INTERNAL, refused.response
    assert "could not run terraform" in refused.response["error_msg"]
    assert target.read_text() == "untouched"


def test_what_the_tool_sees(tool_env, tmp_path):
    """argv as given (no shell), cwd = work_dir, stdin /dev/null, automation variables,
    env_vars on top of the inherited environment, iac-runner's own IAC_* settings and
    loader hooks removed."""
    tool = fake_tool(
        tmp_path,
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
        "    'stdin': os.readlink('/proc/self/fd/0'), 'env': dict(os.environ),\n"
        "    'pgid_is_pid': os.getpgid(0) == os.getpid()}))\n",
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **tool_env,
        "IAC_RUNNER_TERRAFORM_BIN": tool,
        "IAC_RUNNER_SECRET_SETTING": "not-for-the-tool",
        "LD_PRELOAD": "",
        "INHERITED_VAR": "inherited",
    }
    request = {
        "tool": "terraform",
        "work_dir": str(work),
        "command": "plan",
        "args": ["-out=tfplan", "$HOME", "a b;c", "*"],
        "env_vars": {"TF_VAR_region": "us-east-1", "INHERITED_VAR": "overridden"},
        "timeout": 30,
    }
    result = run_runner(request, env)
    assert result.status == EXIT_OK, result
    seen = json.loads(result.response["output"])
    assert seen["argv"] == ["plan", "-out=tfplan", "$HOME", "a b;c", "*"]
    assert seen["cwd"] == str(work.resolve())
    assert seen["stdin"] == "/dev/null"
    assert seen["pgid_is_pid"] is True  # its own process group
    tool_environ = seen["env"]
    assert tool_environ["TF_IN_AUTOMATION"] == "1"
    assert tool_environ["TF_INPUT"] == "0"
    assert tool_environ["TF_VAR_region"] == "us-east-1"
    assert tool_environ["INHERITED_VAR"] == "overridden"
    assert tool_environ["TF_CLI_CONFIG_FILE"] == tool_env["TF_CLI_CONFIG_FILE"]
    assert not [k for k in tool_environ if k.startswith("IAC_")]
    assert "LD_PRELOAD" not in tool_environ


def test_tool_failure_is_exit_status_1(tool_env, tmp_path):
    (tmp_path / "main.tf").write_text("this is not HCL {")
    request = {"tool": "terraform", "work_dir": str(tmp_path), "command": "validate"}
    result = run_runner(request, tool_env)
    assert result.status == EXIT_TOOL_FAILED
    assert_no_traceback(result)
    response = result.response
    check_response(response)
    assert response["success"] is False
    assert response["exit_code"] == 1
    # With terraform's own first error line (colours and its box removed).
    assert response["error_msg"] == (
        "terraform validate exited with code 1: Error: Unsupported block type"
    )
    assert "Error" in response["output"]


# A configuration terraform refuses: (main.tf, command, the start of its first error line).
FAILING_CONFIGS = {
    "undeclared-variable": (
        'output "o" {\n  value = var.nope\n}\n',
        "plan",
        "Error: Reference to undeclared input variable",
    ),
    "http-backend-closed-port": (
        'terraform {\n  backend "http" {\n    address = "http://127.0.0.1:{port}/state"\n'
        "    retry_max = 0\n  }\n}\n",
        "init",
        "Error: Error refreshing state: Failed to get state: GET http://127.0.0.1:{port}/state",
    ),
    "not-hcl": ("this is not HCL {", "validate", "Error: Unsupported block type"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("color", [False, True], ids=["no-color", "color"])
@pytest.mark.parametrize("case", list(FAILING_CONFIGS))
def test_error_msg_carries_terraform_s_first_error_line(tool_env, tmp_path, case, color, stream):
    """error_msg says how terraform ended and its own first `Error:` line (from stderr,
    in or out of its box, colours removed), not only the exit code."""
    port = str(free_port())  # nothing listens there
    config, command, error = (x.replace("{port}", port) for x in FAILING_CONFIGS[case])
    (tmp_path / "main.tf").write_text(config)
    request = {
        "tool": "terraform",
        "work_dir": str(tmp_path),
        "command": command,
        "args": [] if color else ["-no-color"],
    }
    result = run_runner(request, tool_env, *(["--stream"] if stream else []))
    assert result.status == EXIT_TOOL_FAILED, result.stdout[-2000:]
    message = (result.result if stream else result.response)["error_msg"]
    assert message.startswith(f"terraform {command} exited with code 1: {error}"), message
    assert "\x1b" not in message and "\u2502" not in message and "\n" not in message


def test_error_msg_without_an_error_line_is_the_exit_code(tool_env, tmp_path):
    """A tool that fails without a diagnostic (an "Error: " inside a line is not one,
    nor one on stdout) keeps the plain message."""
    body = (
        "import sys\n"
        "print('Error: on stdout is not a diagnostic')\n"
        "print('some Error: in the middle', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": fake_tool(tmp_path, body)}
    result = run_runner({"tool": "terraform", "command": "plan"}, env)
    assert result.response["error_msg"] == "terraform plan exited with code 3"


def test_exit_code_of_a_tool_killed_by_a_signal(tool_env, tmp_path):
    tool = fake_tool(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n")
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    result = run_runner({"tool": "terraform", "command": "version"}, env)
    assert result.status == EXIT_TOOL_FAILED
    response = result.response
    assert response["exit_code"] == 128 + 6
    assert response["error_msg"] == "terraform was killed by signal SIGABRT"


def test_import_path_stays_light(tool_env):
    """iac-runner starts once per command: importing its CLI must not pull in the
    server's or backend's heavy dependencies. `python -X importtime` lists every module."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import runner_stdio.cli"],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=60,
        check=True,
    )
    modules = [
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    ]
    assert "runner_stdio.cli" in modules, proc.stderr[-2000:]
    heavy = ("grpc", "google.protobuf", "pydantic", "fastapi", "starlette", "sqlalchemy")
    loaded = [m for m in modules if m.split(".")[0] in heavy or m.startswith(heavy)]
    assert loaded == []


# -- bad requests ----------------------------------------------------------------------


def _req(**fields: Any) -> dict[str, Any]:
    """A valid request with `fields` changed (a value of DROP removes the field)."""
    request: dict[str, Any] = {"tool": "terraform", "command": "version"}
    request.update(fields)
    return {k: v for k, v in request.items() if v is not DROP}


DROP = object()
TOO_BIG = json.dumps(_req(args=["x" * (1024 * 1024)])).encode()

Case = tuple[str, Any, list[str], dict[str, str], str]


def case(
    name: str, request: Any, fragment: str, *, flags: tuple[str, ...] = (), env: Any = None
) -> Case:
    """A bad request: its id, the request (a dict, or raw bytes), the error_msg fragment
    expected, extra iac-runner flags and environment. "{tmp}" in any string is replaced
    by a directory the test prepares: {tmp}/file (a file), {tmp}/root/inside,
    {tmp}/root2 and {tmp}/outside (directories), {tmp}/root/escape -> {tmp}/outside."""
    return (name, request, list(flags), env or {}, fragment)


TF = b'{"tool":"terraform","command":"version",'
ROOT = ("--workspace-root", "{tmp}/root")
BAD_REQUESTS: list[Case] = [
    # not a JSON object
    case("invalid-json", b'{"tool": "terraform",', "request is not valid JSON: Expecting"),
    case("trailing-garbage", b'{"tool": "terraform"} x', "request is not valid JSON: Extra data"),
    case("non-object-list", b'["terraform", "version"]', "must be a JSON object, got list"),
    case("non-object-string", b'"terraform version"', "must be a JSON object, got str"),
    case("non-object-null", b"null", "request must be a JSON object, got NoneType"),
    case("empty", b"", "empty request: send one JSON object on stdin"),
    case("whitespace-only", b" \n\t\n", "empty request"),
    case("not-utf8", b'{"tool": "terra\xffform"}', "request is not valid UTF-8"),
    case("deeply-nested", b"[" * 100_000, "request is not valid JSON: maximum recursion"),
    case("raw-nul-byte", TF + b'\x00"timeout": 5}', "request is not valid JSON"),
    case("too-big", TOO_BIG, "request is larger than 1048576 bytes"),
    # missing, empty, wrongly typed and unknown fields
    case("missing-tool", _req(tool=DROP), "missing required field 'tool'"),
    case("missing-command", _req(command=DROP), "missing required field 'command'"),
    case("null-command", _req(command=None), "missing required field 'command'"),
    case("empty-command", _req(command=""), "field 'command' must not be empty"),
    case("tool-not-string", _req(tool=["terraform"]), "field 'tool' must be a string, got list"),
    case("command-not-string", _req(command=1), "field 'command' must be a string, got int"),
    case("work-dir-not-string", _req(work_dir=5), "field 'work_dir' must be a string, got int"),
    case("stdout-file-no-work-dir", _req(stdout_file="out.json"), "needs a work_dir"),
    case("stdout-file-path", _req(stdout_file="../out.json", work_dir="{tmp}"), "'stdout_file'"),
    case("stdout-file-dot", _req(stdout_file=".out", work_dir="{tmp}"), "'stdout_file'"),
    case("stdout-file-not-string", _req(stdout_file=1), "field 'stdout_file' must be a string"),
    case("args-not-list", _req(args="-out=x"), "field 'args' must be a list of strings, got str"),
    case("args-empty-string", _req(args=""), "field 'args' must be a list of strings, got str"),
    case("args-item-not-string", _req(args=["-json", 3]), "args[1] must be a string, got int"),
    case("env-not-object", _req(env_vars=["A=1"]), "'env_vars' must be an object of strings"),
    case("env-value-number", _req(env_vars={"N": 1}), "env_vars['N'] must be a string, got int"),
    case("unknown-field", _req(workdir="/tmp"), "unknown field(s) 'workdir'; allowed: tool, "),
    case("unknown-fields", _req(cwd="/", cmd="x"), "unknown field(s) 'cmd', 'cwd'; allowed"),
    case("nul-in-command", _req(command="ver\x00sion"), "'command' must not contain NUL bytes"),
    case("nul-in-arg", _req(args=["a\x00b"]), "args[0] must not contain NUL bytes"),
    case("nul-in-env", _req(env_vars={"A": "\x00"}), "env_vars['A'] must not contain NUL bytes"),
    case("surrogate-arg", TF + b'"args":["\\ud800"]}', "args[0] is not valid Unicode"),
    case("surrogate-env", TF + b'"env_vars":{"A":"\\udcff"}}', "env_vars['A'] is not valid"),
    case("surrogate-work-dir", TF + b'"work_dir":"\\udcff"}', "'work_dir' is not valid Unicode"),
    # timeouts
    case("timeout-negative", _req(timeout=-1), "'timeout' must be a positive number of seconds"),
    case("timeout-absurd", _req(timeout=10**9), "'timeout' 1e+09 exceeds the maximum of 86400 s"),
    case("timeout-bool", _req(timeout=True), "'timeout' must be a number of seconds, got bool"),
    case("timeout-false", _req(timeout=False), "'timeout' must be a number of seconds, got bool"),
    case("timeout-string", _req(timeout="30"), "'timeout' must be a number of seconds, got str"),
    case("timeout-nan", TF + b'"timeout":NaN}', "must be a positive number of seconds, got nan"),
    case(
        "timeout-infinity",
        TF + b'"timeout":Infinity}',
        "must be a positive number of seconds, got inf",
    ),
    case(
        "timeout-1e999", TF + b'"timeout":1e999}', "must be a positive number of seconds, got inf"
    ),
    case(
        "timeout-400-digits", TF + b'"timeout":1' + b"0" * 400 + b"}", "'timeout' is out of range"
    ),
    case("timeout-5000-digits", TF + b'"timeout":1' + b"0" * 5000 + b"}", "Exceeds the limit"),
    case("timeout-over-flag", _req(timeout=11), "maximum of 10 s", flags=("--max-timeout", "10")),
    case(
        "timeout-over-env", _req(timeout=11), "maximum of 2 s", env={"IAC_RUNNER_MAX_TIMEOUT": "2"}
    ),
    # work_dir
    case(
        "work-dir-is-file", _req(work_dir="{tmp}/file"), "work_dir '{tmp}/file' is not a directory"
    ),
    case("work-dir-missing", _req(work_dir="{tmp}/missing"), "'{tmp}/missing' does not exist"),
    case("outside-root", _req(work_dir="{tmp}/outside"), "outside the workspace root", flags=ROOT),
    case(
        "outside-root-env",
        _req(work_dir="{tmp}/outside"),
        "work_dir '{tmp}/outside' is outside the workspace root '{tmp}/root'",
        env={"IAC_RUNNER_WORKSPACE_ROOT": "{tmp}/root"},
    ),
    case("dotdot-escape", _req(work_dir="../outside"), "'../outside' is outside the", flags=ROOT),
    case(
        "symlink-escape", _req(work_dir="escape"), "'escape' is outside the workspace", flags=ROOT
    ),
    case("root-name-prefix", _req(work_dir="{tmp}/root2"), "is outside the workspace", flags=ROOT),
    case("missing-in-root", _req(work_dir="nope"), "work_dir 'nope' does not exist", flags=ROOT),
    # tool and command
    case(
        "unknown-tool", _req(tool="pulumi"), "unknown tool 'pulumi'; allowed tools: terraform, tofu"
    ),
    case("tool-case", _req(tool="Terraform"), "unknown tool 'Terraform'; allowed tools: terraform"),
    case(
        "console", _req(command="console"), "'console' is not allowed for terraform: it is an inte"
    ),
    case("login", _req(command="login"), "'login' is not allowed for terraform: it is interactive"),
    case("logout", _req(command="logout"), "'logout' is not allowed for terraform: it is interact"),
    case(
        "unlisted", _req(command="rm"), "'rm' is not allowed for terraform; allowed: apply, destr"
    ),
    case("flag-as-command", _req(command="-version"), "command '-version' is not allowed for terr"),
    case(
        "tool-bin-missing",
        _req(),
        "terraform binary not found: IAC_RUNNER_TERRAFORM_BIN={tmp}/no-tf is not an executable",
        env={"IAC_RUNNER_TERRAFORM_BIN": "{tmp}/no-tf"},
    ),
    case(
        "tool-bin-not-executable",
        _req(),
        "IAC_RUNNER_TERRAFORM_BIN={tmp}/file is not an executable file",
        env={"IAC_RUNNER_TERRAFORM_BIN": "{tmp}/file"},
    ),
    case(
        "tool-not-on-path",
        _req(tool="tofu"),
        "tofu is not installed: 'tofu' is not on PATH (install it or set IAC_RUNNER_TOFU_BIN",
        env={"PATH": "{tmp}/root"},
    ),
    # environment and arguments
    case("env-name-digit", _req(env_vars={"1BAD": "x"}), "env_vars name '1BAD' is not a valid"),
    case("env-name-dash", _req(env_vars={"TF-VAR": "x"}), "env_vars name 'TF-VAR' is not a valid"),
    case("env-name-equals", _req(env_vars={"A=B": "x"}), "env_vars name 'A=B' is not a valid"),
    case("ld-preload", _req(env_vars={"LD_PRELOAD": "x.so"}), "name 'LD_PRELOAD' is not allowed"),
    case("ld-library-path", _req(env_vars={"LD_LIBRARY_PATH": "/"}), "'LD_LIBRARY_PATH' is not a"),
    case(
        "ld-audit", _req(env_vars={"LD_AUDIT": "x.so"}), "env_vars name 'LD_AUDIT' is not allowed"
    ),
    case("chdir", _req(args=["-chdir=/"]), "args[0] '-chdir=/' is not allowed: work_dir sets the"),
    case("chdir-dashes", _req(args=["-json", "--chdir=/etc"]), "args[1] '--chdir=/etc' is not all"),
    case("sensitive-unknown", _req(sensitive_env=["PW"]), "sensitive_env names ['PW'] are not in "),
    case("mask-values-string", _req(mask_values="pw"), "'mask_values' must be a list of strings"),
    case("mask-values-number", _req(mask_values=["a", 1]), "mask_values[1] must be a string, got"),
    case("mask-values-nul", _req(mask_values=["a\x00"]), "mask_values[0] must not contain NUL"),
    case(
        "mask-values-surrogate",
        TF + b'"mask_values":["\\ud800"]}',
        "mask_values[0] is not valid Unicode (lone surrogate)",
    ),
    case("mask-values-too-many", _req(mask_values=["x"] * 1001), "has more than 1000 items"),
    case(
        "sensitive-not-list",
        _req(sensitive_env="PW", env_vars={"PW": "x"}),
        "field 'sensitive_env' must be a list of env_vars names",
    ),
]

STREAM_TOO = {
    "invalid-json",
    "mask-values-nul",
    "missing-tool",
    "unknown-field",
    "nul-in-arg",
    "timeout-nan",
    "work-dir-is-file",
    "console",
    "ld-preload",
    "tool-bin-missing",
}


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: _fill(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tmp) for v in value]
    return value


@pytest.fixture
def bad_input_tree(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "root" / "inside").mkdir(parents=True)
    (tmp_path / "root2").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "escape").symlink_to(tmp_path / "outside")
    return tmp_path


def test_at_least_twenty_bad_requests():
    assert len(BAD_REQUESTS) >= 20
    assert len({case[0] for case in BAD_REQUESTS}) == len(BAD_REQUESTS)


@pytest.mark.parametrize(
    ("request_", "flags", "extra_env", "fragment", "stream"),
    [
        pytest.param(req, flags, extra, frag, stream, id=f"{name}{'-stream' if stream else ''}")
        for name, req, flags, extra, frag in BAD_REQUESTS
        for stream in ([False, True] if name in STREAM_TOO else [False])
    ],
)
def test_bad_request_is_refused(
    tool_env, bad_input_tree, request_, flags, extra_env, fragment, stream
):
    tmp = bad_input_tree
    request = request_ if isinstance(request_, bytes) else _fill(request_, tmp)
    env = {**tool_env, **_fill(extra_env, tmp)}
    flags = _fill(flags, tmp) + (["--stream"] if stream else [])
    result = run_runner(request, env, *flags, timeout=60)

    assert result.status == EXIT_INVALID, (result.status, result.stdout, result.stderr)
    assert_no_traceback(result)
    assert result.stderr == b""
    fragment = _fill(fragment, tmp)
    if stream:
        assert len(result.events) == 1, result.events
        answer = result.result
        assert answer["outcome"] == "refused"
        assert "output" not in answer
    else:
        answer = result.response
        check_response(answer)
        assert answer["output"] == ""
    assert answer["success"] is False
    assert answer["exit_code"] == -1
    assert fragment in answer["error_msg"], answer["error_msg"]
    assert answer["started_at"] == answer["ended_at"]


def test_request_of_exactly_the_size_cap_is_accepted(tool_env, tmp_path):
    """The cap refuses over-long requests only: 1 MiB exactly is still read whole.
    (One argument may not exceed 128 KiB on Linux, so the bulk is spread over eleven.)"""
    tool = fake_tool(tmp_path, "import sys\nprint(sum(map(len, sys.argv[3:])))\n")
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": tool}
    chunks = ["y" * 100_000] * 10
    base = len(json.dumps(_req(args=["-x", *chunks, ""])).encode())
    last = "z" * (1024 * 1024 - base)
    request = json.dumps(_req(args=["-x", *chunks, last])).encode()
    assert len(request) == 1024 * 1024
    result = run_runner(request, env)
    assert result.status == EXIT_OK, result.response["error_msg"]
    assert result.response["output"] == f"{1_000_000 + len(last)}\n"


def test_tool_that_cannot_be_started_is_an_internal_error(tool_env, tmp_path):
    """A request that passes validation but that the OS refuses to exec (here one
    argument over Linux's 128 KiB limit) gives exit status 3 and a JSON answer."""
    result = run_runner(_req(args=["y" * 200_000]), tool_env)
    assert result.status == EXIT_INTERNAL
    assert_no_traceback(result)
    response = result.response
    check_response(response)
    assert response["success"] is False
    assert response["error_msg"].startswith("could not run terraform: [Errno 7] Argument list")
    result = run_runner(_req(args=["y" * 200_000]), tool_env, "--stream")
    assert result.status == EXIT_INTERNAL
    assert [e["type"] for e in result.events] == ["result"]
    assert result.result["outcome"] == "error"


@pytest.mark.parametrize(
    "changes",
    [
        {"args": None, "env_vars": None, "timeout": None, "sensitive_env": None},
        {"timeout": 0, "work_dir": ""},
    ],
    ids=["null", "zero"],
)
def test_null_and_zero_mean_the_defaults(tool_env, changes):
    result = run_runner({**SEED_REQUEST, **changes}, tool_env)
    assert result.status == EXIT_OK, result.stdout
    assert result.response["success"] is True


def test_bad_command_line_flag_is_an_argparse_error(tool_env):
    """Operator errors in the flags (not the request) stop before reading stdin."""
    result = run_runner(SEED_REQUEST, tool_env, "--grace", "-1")
    assert result.status == 2
    assert b"--grace" in result.stderr and b"must be a positive number" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("request_kind", ["refused", "run"])
@pytest.mark.parametrize("stdout", ["closed", "full"])
def test_stdout_closed_or_full_is_exit_3_with_one_line(
    tool_env, tmp_path, stdout, request_kind, stream
):
    """`iac-runner >&-` or `> /dev/full`: nowhere to answer. Exit 3 and one line on
    stderr (it was a traceback and exit 1), for a refused request and for a run; a tool
    it had started is stopped at once."""
    seconds = unique_seconds()
    body = f"import os\nprint('hello', flush=True)\nos.execvp('sleep', ['sleep', '{seconds}'])\n"
    if not stream:
        body = "print('hello')\n"
    env = {**tool_env, "IAC_RUNNER_TERRAFORM_BIN": fake_tool(tmp_path, body)}
    request = {"tool": "terraform" if request_kind == "run" else "nope", "command": "plan"}
    argv = [IAC_RUNNER, *(["--stream"] if stream else [])]
    if stdout == "closed":
        # `>&-` by sh, not a preexec_fn: that makes Python fork and run code in the child,
        # where gRPC (loaded in this process by other tests) can abort (SIGABRT, "epoll_wait
        # error: Bad file descriptor") before the exec.
        argv = ["sh", "-c", 'exec "$0" "$@" >&-', *argv]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            argv,
            input=json.dumps(request).encode(),
            stdout=full if stdout == "full" else None,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
        )
    assert proc.returncode == EXIT_INTERNAL, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iac-runner: "), lines
    assert ("not open" if stdout == "closed" else "No space left on device") in lines[0]
    assert pids_matching(f"sleep {seconds}") == []
