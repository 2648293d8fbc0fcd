"""Reviewing what a run changes and what a deployment holds: `iac runs plan` (the resource
changes of a plan), `iac runs discard`, `iac outputs`, `iac state list|unlock`."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from iac_cli.client import seg
from iac_cli.context import State, json_option, pass_state
from iac_cli.runs import runs
from iac_cli.watch import plan_line

# Action: (symbol, colour), as terraform's own plan output shows them.
ACTIONS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "delete": ("-", "red"),
    "replace": ("-/+", "red"),
    "read": ("<=", "cyan"),
}


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _changed_attributes(change: dict[str, Any]) -> list[str]:
    """`  input: "v1" -> "v2"` for each changed attribute of an update or replacement."""
    before, after = change.get("before") or {}, change.get("after") or {}
    lines = []
    forcing = set(change.get("forces_replacement") or [])
    for path in change.get("changed") or []:
        top = path.split(".")[0].split("[")[0]
        old = before.get(top) if isinstance(before, dict) else None
        new = after.get(top) if isinstance(after, dict) else None
        mark = "  # forces replacement" if path in forcing else ""
        shown = f"{_value(old)} -> {_value(new)}" if path == top else "(changed)"
        lines.append(f"      {path}: {shown}{mark}")
    return lines


def _print_changes(state: State, changes: list[dict[str, Any]]) -> None:
    for change in changes:
        symbol, colour = ACTIONS.get(change["action"], ("?", ""))
        line = Text(f"  {symbol} ", style=colour)
        line.append(change["address"], style="bold")
        reason = f"  ({change['reason']})" if change.get("reason") else ""
        line.append(f"  {change['action']}{reason}")
        state.output.out.print(line)
        if change["action"] in ("update", "replace"):
            for text in _changed_attributes(change):
                state.output.out.print(Text(text))


@runs.command("plan")
@click.argument("run_id", metavar="ID", type=int)
@json_option
@pass_state
def show_plan(state: State, run_id: int, as_json: bool) -> None:
    """The resource changes of run ID's plan (replacements and deletions first), its output
    changes and any drift; sensitive values are shown as '(sensitive value)'."""
    plan = state.api.json("GET", f"/runs/{run_id}/plan")
    if as_json:
        state.output.json(plan)
        return
    state.output.out.print(Text(plan_line(plan["counts"]), style="bold"))
    _print_changes(state, plan["resource_changes"])
    if plan["output_changes"]:
        state.output.out.print(Text("Outputs:", style="bold"))
        for output in plan["output_changes"]:
            symbol, colour = ACTIONS.get(output["action"], ("?", ""))
            text = Text(f"  {symbol} ", style=colour)
            text.append(f"{output['name']}: {_value(output['before'])} -> ")
            text.append(_value(output["after"]))
            state.output.out.print(text)
    if plan["resource_drift"]:
        state.output.out.print(Text("Changed outside terraform (drift):", style="bold"))
        _print_changes(state, plan["resource_drift"])


@runs.command("discard")
@click.argument("run_id", metavar="ID", type=int)
@click.option("--comment", default="", help="Kept in the run's history.")
@json_option
@pass_state
def discard(state: State, run_id: int, comment: str, as_json: bool) -> None:
    """End a run awaiting approval without applying its plan."""
    run = state.api.json("POST", f"/runs/{run_id}/discard", json={"comment": comment})
    if as_json:
        state.output.json(run)
        return
    state.output.result(f"run {run_id} discarded")


@click.command("outputs")
@click.argument("name")
@click.option("--reveal", is_flag=True, help="Show sensitive values too (admin tokens only).")
@json_option
@pass_state
def outputs(state: State, name: str, reveal: bool, as_json: bool) -> None:
    """The outputs of deployment NAME's latest state (sensitive ones as a marker unless
    --reveal)."""
    params = {"reveal": "true"} if reveal else {}
    rows = state.api.json("GET", f"/deployments/{seg(name)}/outputs", params=params)
    if as_json:
        state.output.json({row["name"]: row["value"] for row in rows})
        return
    if not rows:
        state.output.note("no outputs")
        return
    state.output.table(["NAME", "VALUE"], [[row["name"], _value(row["value"])] for row in rows])


@click.group("state")
def state_group() -> None:
    """A deployment's state: the resources it records, and a force-unlock."""


@state_group.command("list")
@click.argument("name")
@json_option
@pass_state
def state_list(state: State, name: str, as_json: bool) -> None:
    """The resource instances in deployment NAME's latest state, one address per line."""
    rows = state.api.json("GET", f"/deployments/{seg(name)}/state/resources")
    if as_json:
        state.output.json(rows)
        return
    for row in rows:
        state.output.result(row["address"])


@state_group.command("unlock")
@click.argument("name")
@click.option("--comment", default="", help="Kept in the history of the run that held it.")
@pass_state
def state_unlock(state: State, name: str, comment: str) -> None:
    """Release deployment NAME's state lock when its holder is gone (its run ended, or no
    run holds it). A lock of a run still executing is refused: cancel the run."""
    state.api.json("POST", f"/deployments/{seg(name)}/state/unlock", json={"comment": comment})
    state.output.result(f"the state of {name} is unlocked")
