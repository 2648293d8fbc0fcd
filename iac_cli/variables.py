"""`iac vars`: a deployment's Terraform variables (TF_VAR_<key>) and environment variables.

A sensitive value is sent once and never shown again: not by the API, not by this CLI.
"""

from __future__ import annotations

import click

from iac_cli.client import seg
from iac_cli.context import State, json_option, pass_state
from iac_cli.prompts import from_stdin

env_option = click.option(
    "--env",
    "is_env",
    is_flag=True,
    help="An environment variable of the tool (e.g. AWS_REGION), not a Terraform variable.",
)


@click.group("vars")
def variables() -> None:
    """Variables of a deployment, passed to every run."""


def category(is_env: bool) -> str:
    return "env" if is_env else "terraform"


@variables.command("set")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@click.option("--sensitive", is_flag=True, help="Encrypt at rest, never show, mask in logs.")
@env_option
@json_option
@pass_state
def set_variable(
    state: State, name: str, key: str, value: str, sensitive: bool, is_env: bool, as_json: bool
) -> None:
    """Set KEY to VALUE on deployment NAME. A VALUE of '-' is read from stdin (keeps a
    secret out of the shell's history)."""
    value = from_stdin(value, "the value") or ""
    body = {"value": value, "sensitive": sensitive, "category": category(is_env)}
    row = state.api.json("PUT", f"/deployments/{seg(name)}/variables/{seg(key)}", json=body)
    if as_json:
        state.output.json(row)
        return
    kind = "environment variable" if row["category"] == "env" else "terraform variable"
    secret = " (sensitive)" if row["sensitive"] else ""
    state.output.result(f"set {kind} {row['key']}{secret} of {name}")


@variables.command("list")
@click.argument("name")
@json_option
@pass_state
def list_variables(state: State, name: str, as_json: bool) -> None:
    """List the variables of NAME (sensitive values are never shown)."""
    rows = state.api.get(f"/deployments/{seg(name)}/variables")
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note(f"no variables: iac vars set {name} KEY VALUE")
        return
    state.output.table(
        ["KEY", "KIND", "VALUE"],
        [
            [
                v["key"],
                v["category"],
                "(sensitive)" if v["sensitive"] else str(v["value"]),
            ]
            for v in rows
        ],
    )


@variables.command("unset")
@click.argument("name")
@click.argument("key")
@env_option
@pass_state
def unset_variable(state: State, name: str, key: str, is_env: bool) -> None:
    """Remove KEY from deployment NAME."""
    state.api.request(
        "DELETE",
        f"/deployments/{seg(name)}/variables/{seg(key)}",
        params={"category": category(is_env)},
    )
    state.output.result(f"unset {key} of {name}")
