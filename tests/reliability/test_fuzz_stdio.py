"""Hostile input on the stdio protocol: hypothesis-made requests into `iac-runner`.

Never a traceback, never a hang: every input gets one well-formed answer (a refusal with a
message, or a result) and an exit status that says which. Nothing is written outside the
workspace root. The validation functions are fuzzed in-process too, with many more
examples, since they are pure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner_stdio.protocol import Request, RequestError, parse_request, valid_env_name
from runner_stdio.workdir import resolve_work_dir
from tests.conftest import IAC_RUNNER
from tests.procs import make_fake_tool
from tests.reliability.fuzzing import any_text, fuzz_settings, stdin_bodies
from tests.reliability.harness import Counter

RESPONSE_FIELDS = {
    "success": bool,
    "output": str,
    "exit_code": int,
    "error_msg": str,
    "started_at": str,
    "ended_at": str,
}


@given(body=stdin_bodies, max_timeout=st.sampled_from([10.0, 86400.0, float("inf")]))
@fuzz_settings(500, 20_000)
def test_parse_request_accepts_or_refuses_with_a_message(body: bytes, max_timeout: float) -> None:
    Counter.add("inputs fuzzed (stdio parser, in-process)")
    try:
        request = parse_request(body, max_timeout=max_timeout)
    except RequestError as exc:
        assert str(exc)
        return
    assert isinstance(request, Request)
    assert request.tool and request.command and "\x00" not in request.tool + request.command
    assert all(valid_env_name(k) and "\x00" not in v for k, v in request.env_vars.items())
    assert not {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"} & set(request.env_vars)
    assert all("chdir" not in a.lstrip("-").split("=")[0] for a in request.args)
    assert 0 <= request.timeout <= max_timeout
    assert set(request.sensitive_env) <= set(request.env_vars)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/w (a directory), root/file, root/link-out -> outside, outside/ (must stay empty)."""
    tmp = tmp_path_factory.mktemp("fuzz-stdio")
    (tmp / "root" / "w").mkdir(parents=True)
    (tmp / "root" / "file").write_text("x")
    (tmp / "outside").mkdir()
    (tmp / "root" / "link-out").symlink_to(tmp / "outside")
    return tmp


@given(work_dir=any_text | st.sampled_from(["..", "link-out", "link-out/..", "w/../..", "/"]))
@fuzz_settings(500, 20_000)
def test_work_dir_resolves_inside_the_root_or_is_refused(tree: Path, work_dir: str) -> None:
    Counter.add("inputs fuzzed (work_dir, in-process)")
    root = tree / "root"
    try:
        path = resolve_work_dir(work_dir, str(root))
    except (RequestError, ValueError) as exc:  # ValueError: NUL, which the parser refuses
        assert str(exc)
        return
    assert path is not None
    real = os.path.realpath(root)
    assert path == real or path.startswith(real + os.sep), path
    assert os.path.isdir(path)


@pytest.fixture(scope="module")
def fuzz_env(tree: Path, tf_cli_config: str) -> Iterator[dict[str, str]]:
    fake = make_fake_tool(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=tf_cli_config,
        IAC_RUNNER_TERRAFORM_BIN=fake,
        IAC_RUNNER_TOFU_BIN=fake,
        IAC_RUNNER_WORKSPACE_ROOT=str(tree / "root"),
    )
    yield env
    assert list((tree / "outside").iterdir()) == [], "something was written outside the root"


def _check_answer(answer: dict[str, Any], status: int) -> None:
    for name, kind in RESPONSE_FIELDS.items():
        if name == "output" and name not in answer:
            continue  # stream mode: the lines came as events
        assert isinstance(answer[name], kind), (name, answer)
    if status == 0:
        assert answer["success"] is True and answer["exit_code"] == 0
    else:
        assert answer["success"] is False and answer["error_msg"], answer
    if status in (2, 3):
        assert answer["exit_code"] == -1


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the 1 MiB bodies
@given(body=stdin_bodies, stream=st.booleans())
@fuzz_settings(100, 3000)
def test_iac_runner_answers_every_input_once_without_a_traceback(
    fuzz_env: dict[str, str], body: bytes, stream: bool
) -> None:
    Counter.add("inputs fuzzed (iac-runner stdin)")
    flags = ["--max-timeout", "10", "--default-timeout", "10", "--grace", "1"]
    proc = subprocess.run(
        [IAC_RUNNER, *flags, *(["--stream"] if stream else [])],
        input=body,
        capture_output=True,
        env=fuzz_env,
        timeout=60,  # a hang fails the example
        check=False,
    )
    assert b"Traceback" not in proc.stderr and b"Traceback" not in proc.stdout
    assert proc.returncode in (0, 1, 2, 3), (
        proc.returncode,
        proc.stdout[-500:],
        proc.stderr[-500:],
    )
    if proc.returncode == 3:
        # Valid, but refused by the OS at exec: one argument over Linux's 128 KiB (as
        # tests/runner_stdio/test_protocol.py::test_tool_that_cannot_be_started_is_an_internal_error
        # documents). Still one clear answer.
        assert b"could not run terraform: [Errno 7] Argument list too long" in proc.stdout
    assert proc.stdout.endswith(b"\n")
    kind = {2: "refusals", 3: "refused by the OS at exec"}.get(proc.returncode, "results")
    Counter.add("iac-runner answers: " + kind)
    lines = proc.stdout.decode().splitlines()
    if stream:
        events = [json.loads(line) for line in lines]
        assert events[-1]["type"] == "result"
        assert all(e["type"] in ("started", "output") for e in events[:-1])
        _check_answer(events[-1], proc.returncode)
    else:
        assert len(lines) == 1, lines[:3]
        answer = json.loads(lines[0])
        assert list(answer) == list(RESPONSE_FIELDS)
        _check_answer(answer, proc.returncode)
