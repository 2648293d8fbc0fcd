"""A full offline terraform lifecycle through `iac-runner`, with real terraform and a
configuration that uses only built-ins (terraform_data, outputs, local-exec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runner_stdio.helpers import (
    EXIT_OK,
    LOCK_INFO,
    assert_no_traceback,
    check_response,
    check_stream,
    run_runner,
    terraform,
)


def step(
    env: dict[str, str], work_dir: Path, command: str, *args: str, **fields: Any
) -> dict[str, Any]:
    """Run one terraform command through iac-runner and check it succeeded."""
    request = {
        "tool": "terraform",
        "work_dir": str(work_dir),
        "command": command,
        "args": list(args),
        "env_vars": {"TF_VAR_greeting": "hi-from-the-test"},
        "timeout": 120,
        **fields,
    }
    result = run_runner(request, env)
    assert_no_traceback(result)
    response = result.response
    check_response(response)
    assert result.status == EXIT_OK, response
    assert response["success"] is True and response["exit_code"] == 0, response
    return response


def test_full_lifecycle(tool_env, tf_dir):
    init = step(tool_env, tf_dir, "init")
    assert "Terraform has been successfully initialized" in init["output"]

    validate = step(tool_env, tf_dir, "validate", "-no-color")
    assert "The configuration is valid" in validate["output"]

    plan = step(tool_env, tf_dir, "plan", "-out=tfplan", "-no-color")
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan["output"]
    assert '"hi-from-the-test"' in plan["output"]  # TF_VAR_greeting reached terraform
    assert (tf_dir / "tfplan").is_file()

    apply = step(tool_env, tf_dir, "apply", "-no-color", "tfplan")
    assert "provisioned hi-from-the-test" in apply["output"]  # the local-exec ran
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in apply["output"]

    output = step(tool_env, tf_dir, "output", "-json")
    outputs = json.loads(output["output"])
    assert outputs["greeting"]["value"] == "hi-from-the-test"
    assert outputs["greeting"]["sensitive"] is False

    state = step(tool_env, tf_dir, "state", "list")
    assert state["output"].split() == ["terraform_data.example"]

    show = step(tool_env, tf_dir, "show", "-json")
    resources = json.loads(show["output"])["values"]["root_module"]["resources"]
    assert [r["values"]["input"] for r in resources] == ["hi-from-the-test"]

    destroy = step(tool_env, tf_dir, "destroy", "-auto-approve", "-no-color")
    assert "Destroy complete! Resources: 1 destroyed." in destroy["output"]

    state_after = step(tool_env, tf_dir, "state", "list")
    assert state_after["output"] == ""
    assert not (tf_dir / LOCK_INFO).exists()


def test_env_var_changes_the_result(tool_env, tf_dir):
    """A different TF_VAR_greeting in env_vars reaches terraform and changes the state;
    without it the variable's default is used."""
    step(tool_env, tf_dir, "init")
    first = step(tool_env, tf_dir, "apply", "-auto-approve", env_vars={"TF_VAR_greeting": "one"})
    assert "provisioned one" in first["output"]
    assert terraform(tf_dir, tool_env, "output", "-raw", "greeting").stdout == "one"
    changed = step(tool_env, tf_dir, "apply", "-auto-approve", "-no-color", env_vars={})
    assert "Resources: 0 added, 1 changed, 0 destroyed." in changed["output"]
    assert 'greeting = "hello"' in changed["output"]
    assert terraform(tf_dir, tool_env, "output", "-raw", "greeting").stdout == "hello"


def test_lifecycle_in_stream_mode(tool_env, tf_dir):
    """apply through --stream: the local-exec's line arrives as an event, result last."""
    step(tool_env, tf_dir, "init")
    request = {
        "tool": "terraform",
        "work_dir": str(tf_dir),
        "command": "apply",
        "args": ["-auto-approve", "-no-color"],
        "env_vars": {"TF_VAR_greeting": "streamed"},
        "timeout": 120,
    }
    result = run_runner(request, tool_env, "--stream")
    assert result.status == EXIT_OK
    assert_no_traceback(result)
    lines = check_stream(result.events)
    text = [line for _, _, line in lines]
    assert any(line.endswith("provisioned streamed") for line in text), text
    assert any(line.startswith("Apply complete!") for line in text), text
    assert result.result["success"] is True and result.result["outcome"] == "succeeded"
    assert result.result["output_truncated"] is False


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_failed_command_reports_terraform_error(tool_env, tf_dir, command):
    """A plan/apply that terraform rejects: success false, terraform's exit code and
    its error text in output, iac-runner exit status 1."""
    (tf_dir / "main.tf").write_text(
        'resource "terraform_data" "x" {\n  input = var.undeclared\n}\n'
    )
    args = ["-no-color"] + (["-auto-approve"] if command == "apply" else [])
    request = {"tool": "terraform", "work_dir": str(tf_dir), "command": command, "args": args}
    result = run_runner(request, tool_env)
    assert result.status == 1
    response = result.response
    check_response(response)
    assert response["success"] is False and response["exit_code"] == 1
    assert response["error_msg"] == (
        f"terraform {command} exited with code 1: Error: Reference to undeclared input variable"
    )
    assert "Reference to undeclared input variable" in response["output"]
