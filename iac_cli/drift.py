"""`iac drift`: every deployment's drift status (exit 2 when one drifted, for CI), one
deployment's checks, and a check started now (and followed)."""

from __future__ import annotations

from typing import Any

import click

from iac_cli.context import State, json_option, pass_state
from iac_cli.output import show_time
from iac_cli.start import follow_and_report

EXIT_DRIFTED = 2  # as terraform's -detailed-exitcode says "changes"
STYLES = {"drifted": "red", "check_failed": "yellow", "in_sync": "green"}


def what_drifted(detail: dict[str, Any]) -> str:
    if detail.get("reason"):
        return str(detail["reason"])
    parts = [r["address"] for r in detail.get("resources") or []]
    parts += [f"output.{name}" for name in detail.get("outputs") or []]
    return ", ".join(parts) or "-"


def exit_code(statuses: list[str]) -> int:
    return EXIT_DRIFTED if "drifted" in statuses else 0


@click.group("drift", invoke_without_command=True)
@json_option
@pass_state
@click.pass_context
def drift(ctx: click.Context, state: State, as_json: bool) -> int:
    """Every deployment's drift status, drifted first: in_sync, drifted (what drifted),
    check_failed (why) or unknown (never checked). Exit 2 when a deployment drifted."""
    if ctx.invoked_subcommand is not None:
        return 0
    fleet = state.api.get("/drift")
    if as_json:
        state.output.json(fleet)
    elif not fleet:
        state.output.note("no deployments")
    else:
        state.output.table(
            ["DEPLOYMENT", "STATUS", "CHECKED", "RUN", "WHAT DRIFTED / WHY"],
            [
                [
                    d["deployment"],
                    d["status"],
                    show_time(d["checked_at"]),
                    str(d["run_id"] or "-"),
                    what_drifted(d["detail"]),
                ]
                for d in fleet
            ],
        )
    return exit_code([d["status"] for d in fleet])


@drift.command("show")
@click.argument("deployment")
@json_option
@pass_state
def show(state: State, deployment: str, as_json: bool) -> int:
    """One deployment's drift status and its recent checks, newest first (exit 2 when it
    drifted)."""
    found = state.api.get(f"/deployments/{deployment}/drift")
    if as_json:
        state.output.json(found)
        return exit_code([found["status"]])
    state.output.fields(
        [
            ("deployment", found["deployment"]),
            ("status", found["status"]),
            ("checked", show_time(found["checked_at"])),
            ("run", str(found["run_id"] or "-")),
            ("what drifted / why", what_drifted(found["detail"])),
        ]
    )
    if found["history"]:
        state.output.table(
            ["RUN", "CHECKED", "STATUS", "WHAT DRIFTED / WHY"],
            [
                [
                    str(c["run_id"]),
                    show_time(c["checked_at"]),
                    c["status"],
                    what_drifted(c["detail"]),
                ]
                for c in found["history"]
            ],
        )
    return exit_code([found["status"]])


@drift.command("check")
@click.argument("deployment")
@click.option("--no-wait", is_flag=True, help="Queue the check and return at once.")
@json_option
@pass_state
def check(state: State, deployment: str, no_wait: bool, as_json: bool) -> int:
    """Check DEPLOYMENT for drift now (a plan -refresh-only run), follow it, and print the
    verdict: exit 0 in sync, 2 drifted, 1 the check failed."""
    run = state.api.json("POST", f"/deployments/{deployment}/drift")
    if no_wait:
        if as_json:
            state.output.json(run)
        else:
            state.output.result(f"run {run['id']}: drift check of {deployment} queued")
        return 0
    state.output.note(f"run {run['id']}: drift check of {deployment}")
    code = follow_and_report(state, run["id"], as_json=as_json, stop_at_approval=False)
    if code != 0:
        return code
    found = state.api.get(f"/deployments/{deployment}/drift")
    if found["run_id"] == run["id"] and not as_json:
        state.output.note(
            f"{deployment}: {found['status']} ({what_drifted(found['detail'])})",
            STYLES.get(found["status"], ""),
        )
    return exit_code([found["status"]]) if found["run_id"] == run["id"] else 0
