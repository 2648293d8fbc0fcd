"""Reading a plan for review (`backend.plans`) from what real terraform's `show -json`
prints: counts, changes in the order a reviewer needs, changed attributes, outputs; and no
sensitive value in what is kept, whatever it holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backend.plans import SENSITIVE, UNKNOWN, PlanUnreadable, read_plan

CONFIG = """\
variable "v" { default = "one" }
variable "pw" {
  type      = string
  sensitive = true
  default   = "hunter2-old"
}
variable "platform_secrets" { default = ["S3cret-before"] }
resource "terraform_data" "keep" { input = "same" }
resource "terraform_data" "upd" { input = { name = var.v, size = 1 } }
resource "terraform_data" "gone" {
  count = var.v == "one" ? 1 : 0
  input = "bye"
}
resource "terraform_data" "trigger" { input = var.v }
resource "terraform_data" "repl" {
  input = "r"
  lifecycle { replace_triggered_by = [terraform_data.trigger] }
}
resource "terraform_data" "sens" { input = var.pw }
resource "terraform_data" "platform" { input = var.platform_secrets }
resource "terraform_data" "new" {
  count = var.v == "one" ? 0 : 1
  input = { a = 1 }
}
output "o" { value = var.v }
output "s" {
  value     = var.pw
  sensitive = true
}
"""
# Issue 14's table: each secret holds one character terraform or JSON escapes.
SECRETS = [
    "S3c<ret-lt",
    "S3c>ret-gt",
    "S3c&ret-amp",
    'S3c"ret-quote',
    "S3c\\ret-backslash",
    "S3c'ret-apostrophe",
    "S3c$ret-dollar",
    "S3c%ret-percent",
    "S3c{ret}-braces",
    "S3c\nret-newline",
    "S3c\tret-tab",
    "S3cré-t-eacute",
    "S3c🔑ret-emoji",
]


def terraform(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["terraform", *args, "-no-color"] if args[0] != "show" else ["terraform", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 2), done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory: pytest.TempPathFactory, tf_cli_config: str) -> bytes:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAC_", "TF_"))}
    env.update(TF_CLI_CONFIG_FILE=tf_cli_config, CHECKPOINT_DISABLE="1")
    work = tmp_path_factory.mktemp("plan")
    (work / "main.tf").write_text(CONFIG)
    terraform(work, env, "init", "-input=false")
    terraform(work, env, "apply", "-auto-approve", "-input=false")
    (work / "next.tfvars.json").write_text(
        json.dumps({"v": "two", "pw": "hunter2-new", "platform_secrets": SECRETS})
    )
    terraform(work, env, "plan", "-input=false", "-var-file=next.tfvars.json", "-out=tfplan")
    return terraform(work, env, "show", "-json", "tfplan").encode()


def test_counts_changes_and_outputs_as_a_reviewer_needs_them(plan_json: bytes) -> None:
    plan = read_plan(plan_json, SECRETS)
    assert plan.counts.out() == {
        "add": 1, "change": 4, "destroy": 1, "replace": 1, "read": 0, "import": 0, "move": 0,
    }  # fmt: skip
    assert plan.counts.line() == "Plan: 1 to add, 4 to change, 1 to destroy; 1 to replace"
    # Replacements, then deletions, then updates, then creations.
    assert [(c.action, c.address) for c in plan.resource_changes] == [
        ("replace", "terraform_data.repl"),
        ("delete", "terraform_data.gone[0]"),
        ("update", "terraform_data.platform"),
        ("update", "terraform_data.sens"),
        ("update", "terraform_data.trigger"),
        ("update", "terraform_data.upd"),
        ("create", "terraform_data.new[0]"),
    ]
    by_address = {c.address: c for c in plan.resource_changes}
    assert by_address["terraform_data.repl"].reason == "replace_by_triggers"
    upd = by_address["terraform_data.upd"]
    assert upd.changed == ["input.name", "output"] and upd.type == "terraform_data"
    assert upd.before["input"] == {"name": "one", "size": 1}
    assert upd.after["input"] == {"name": "two", "size": 1} and upd.after["output"] == UNKNOWN
    assert by_address["terraform_data.gone[0]"].after is None
    assert {(o.name, o.action, o.before, o.after, o.sensitive) for o in plan.output_changes} == {
        ("o", "update", "one", "two", False),
        ("s", "update", SENSITIVE, SENSITIVE, True),
    }
    assert plan.resource_drift == []


def test_no_sensitive_value_survives_in_any_form(plan_json: bytes) -> None:
    """Terraform's own marks (a sensitive variable, and the attribute it flows into, which
    terraform_data's `output` repeats unmarked), and the platform's secrets (current and
    past values of sensitive variables: the issue-14 table), whatever they hold."""
    kept = json.dumps(read_plan(plan_json, SECRETS).out(), ensure_ascii=False)
    escaped = json.dumps(read_plan(plan_json, SECRETS).out())
    for secret in [*SECRETS, "hunter2-old", "hunter2-new"]:
        for form in {
            secret,
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
        }:
            assert form not in kept and form not in escaped, secret
    assert SENSITIVE in kept
    # The document terraform wrote holds them all in the clear (what is never kept).
    assert "hunter2-old" in plan_json.decode()


@pytest.mark.parametrize(
    "data", [b"", b"[]", b"{}", b"not json", b'{"format_version": "1.2"' + b" " * 10]
)
def test_what_is_no_plan_is_refused(data: bytes) -> None:
    with pytest.raises(PlanUnreadable):
        read_plan(data, [])


def _doc(before: Any, after: Any, **extra: Any) -> bytes:
    change = {"actions": ["update"], "before": before, "after": after, **extra}
    item = {"address": "x.y", "type": "x", "name": "y", "change": change}
    return json.dumps({"format_version": "1.2", "resource_changes": [item]}).encode()


def test_a_secret_is_found_in_keys_numbers_and_escaped_forms() -> None:
    """Map keys, numbers and JSON-escaped (HTML-safe) text hold a secret as plainly as a
    string value does; a rotated secret is still a change, named but not shown."""
    secret = "Pw<Html>&Sec9"
    escaped = json.dumps({"p": secret}).replace("<", "\\u003c").replace(">", "\\u003e")
    escaped = escaped.replace("&", "\\u0026")
    before = {"tags": {secret: "v"}, "port": 48213, "doc": "{}", "input": "old"}
    after = {"tags": {secret: "v"}, "port": 48213, "doc": escaped, "input": "new-" + secret}
    plan = read_plan(_doc(before, after), [secret, "48213"])
    shown = json.dumps(plan.out())
    for form in (secret, "48213", "Pw\\\\u003cHtml"):
        assert form not in shown, (form, shown)
    change = plan.resource_changes[0]
    assert change.after["tags"] == {SENSITIVE: "v"}
    assert change.after["port"] == SENSITIVE and change.after["doc"] == SENSITIVE
    assert sorted(change.changed) == ["doc", "input"], change.changed
    # An attribute whose sensitive value was replaced by another: a change, both hidden.
    rotated = read_plan(
        _doc({"pw": "a"}, {"pw": "b"}, before_sensitive={"pw": True}, after_sensitive={"pw": True}),
        [],
    ).resource_changes[0]
    assert rotated.changed == ["pw"] and rotated.after == {"pw": SENSITIVE}


def test_whether_a_plan_has_changes_is_read_from_it(plan_json: bytes) -> None:
    """What a backend re-attached after the plan step (to `show`) knows of the plan's
    exit code: the review says it."""
    assert read_plan(plan_json, []).has_changes(refresh_only=False)
    drift_only = {
        "format_version": "1.2",
        "resource_drift": [
            {
                "address": "terraform_data.x",
                "type": "terraform_data",
                "name": "x",
                "change": {"actions": ["update"], "before": {"a": 1}, "after": {"a": 2}},
            }
        ],
    }
    review = read_plan(json.dumps(drift_only).encode(), [])
    assert not review.has_changes(refresh_only=False)
    assert review.has_changes(refresh_only=True)
    nothing = read_plan(json.dumps({"format_version": "1.2"}).encode(), [])
    assert not nothing.has_changes(refresh_only=True)
