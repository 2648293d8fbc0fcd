"""`iac schedules`: a deployment's recurring runs (drift checks, plans, applies) on a cron
expression in a time zone: add, list, show, enable, disable, remove, and run one now."""

from __future__ import annotations

from typing import Any

import click

from iac_cli.client import seg
from iac_cli.context import State, json_option, pass_state
from iac_cli.output import show_time

KINDS = ("drift", "plan", "apply")
POLICIES = ("never", "always", "no-destroy")


@click.group()
def schedules() -> None:
    """Schedules: runs a deployment gets on a cron expression (e.g. a nightly drift check)."""


def path(deployment: str, schedule_id: int | None = None) -> str:
    base = f"/deployments/{seg(deployment)}/schedules"
    return base if schedule_id is None else f"{base}/{schedule_id}"


def show_kind(row: dict[str, Any]) -> str:
    if row["kind"] == "apply" and row["auto_approve"] != "never":
        return f"apply (auto-approve {row['auto_approve']})"
    return str(row["kind"])


def show_next(row: dict[str, Any]) -> str:
    return show_time(row["next_run_at"]) if row["enabled"] else "disabled"


def show_last(row: dict[str, Any]) -> str:
    if row["last_skipped"]:
        return f"skipped: {row['last_skipped']}"
    if row["last_run_id"] is not None:
        return f"run {row['last_run_id']} ({show_time(row['last_run_at'])})"
    return "-"


def describe(row: dict[str, Any]) -> str:
    return (
        f"schedule {row['id']} of {row['deployment']}: {show_kind(row)} at '{row['cron']}' "
        f"({row['timezone']})"
    )


@schedules.command("add")
@click.argument("deployment")
@click.option(
    "--cron",
    "cron_expr",
    required=True,
    metavar="EXPR",
    help="Five fields, minute hour day-of-month month day-of-week, e.g. '0 3 * * 1-5'; or "
    "@hourly, @daily, @weekly, @monthly, @yearly.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="The IANA time zone EXPR is read in, e.g. Europe/Paris.",
)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="drift",
    show_default=True,
    help="drift: a drift check; plan; apply (waits for approval unless --auto-approve).",
)
@click.option(
    "--auto-approve",
    type=click.Choice(POLICIES),
    default="never",
    show_default=True,
    help="Apply schedules: never (a person approves), always, or no-destroy (no approval "
    "when the plan deletes and replaces nothing).",
)
@click.option("--disabled", is_flag=True, help="Add it disabled (enable it later).")
@json_option
@pass_state
def add(
    state: State,
    deployment: str,
    cron_expr: str,
    timezone: str,
    kind: str,
    auto_approve: str,
    disabled: bool,
    as_json: bool,
) -> None:
    """Add a schedule to DEPLOYMENT."""
    body = {
        "cron": cron_expr,
        "timezone": timezone,
        "kind": kind,
        "auto_approve": auto_approve,
        "enabled": not disabled,
    }
    row = state.api.json("POST", path(deployment), json=body)
    if as_json:
        state.output.json(row)
        return
    state.output.result(f"added {describe(row)}")
    if row["enabled"]:
        state.output.note(f"next run {show_time(row['next_run_at'])} ({row['description']})")


@schedules.command("list")
@click.argument("deployment", required=False)
@json_option
@pass_state
def list_schedules(state: State, deployment: str | None, as_json: bool) -> None:
    """List the schedules of DEPLOYMENT (or of every deployment you may see)."""
    rows = state.api.get(path(deployment) if deployment else "/schedules")
    if as_json:
        state.output.json(rows)
        return
    state.output.table(
        ["ID", "DEPLOYMENT", "CRON", "TIMEZONE", "KIND", "NEXT RUN", "LAST"],
        [
            [
                str(r["id"]),
                r["deployment"],
                r["cron"],
                r["timezone"],
                show_kind(r),
                show_next(r),
                show_last(r),
            ]
            for r in rows
        ],
    )


@schedules.command("show")
@click.argument("deployment")
@click.argument("schedule_id", type=click.IntRange(1))
@json_option
@pass_state
def show(state: State, deployment: str, schedule_id: int, as_json: bool) -> None:
    """Show schedule SCHEDULE_ID of DEPLOYMENT, with its next due times."""
    row = state.api.json("GET", path(deployment, schedule_id))
    if as_json:
        state.output.json(row)
        return
    upcoming = ", ".join(t.replace("T", " ") for t in row["upcoming"]) or "-"
    state.output.fields(
        [
            ("schedule", f"{row['id']} of {row['deployment']}"),
            (
                "cron",
                f"{row['cron']} ({row['description']})" if row["description"] else row["cron"],
            ),
            ("timezone", row["timezone"]),
            ("kind", show_kind(row)),
            ("next run", show_next(row)),
            ("upcoming", upcoming),
            ("last", show_last(row)),
            ("created", f"{show_time(row['created_at'])} by {row['created_by'] or '-'}"),
        ]
    )


def _set_enabled(state: State, deployment: str, schedule_id: int, enabled: bool) -> None:
    row = state.api.json("PATCH", path(deployment, schedule_id), json={"enabled": enabled})
    if enabled:
        state.output.result(f"enabled {describe(row)}; next run {show_time(row['next_run_at'])}")
    else:
        state.output.result(f"disabled {describe(row)}")


@schedules.command("enable")
@click.argument("deployment")
@click.argument("schedule_id", type=click.IntRange(1))
@pass_state
def enable(state: State, deployment: str, schedule_id: int) -> None:
    """Enable a schedule: its next run is its next due time from now."""
    _set_enabled(state, deployment, schedule_id, True)


@schedules.command("disable")
@click.argument("deployment")
@click.argument("schedule_id", type=click.IntRange(1))
@pass_state
def disable(state: State, deployment: str, schedule_id: int) -> None:
    """Disable a schedule: it queues nothing until enabled."""
    _set_enabled(state, deployment, schedule_id, False)


@schedules.command("remove")
@click.argument("deployment")
@click.argument("schedule_id", type=click.IntRange(1))
@pass_state
def remove(state: State, deployment: str, schedule_id: int) -> None:
    """Remove a schedule (the runs it queued are kept)."""
    state.api.request("DELETE", path(deployment, schedule_id))
    state.output.result(f"removed schedule {schedule_id} of {deployment}")


@schedules.command("trigger")
@click.argument("deployment")
@click.argument("schedule_id", type=click.IntRange(1))
@json_option
@pass_state
def trigger(state: State, deployment: str, schedule_id: int, as_json: bool) -> None:
    """Queue the schedule's run now (refused while a run it queued is still waiting)."""
    out = state.api.json("POST", f"{path(deployment, schedule_id)}/trigger")
    if as_json:
        state.output.json(out)
        return
    row = out["schedule"]
    state.output.result(f"queued run {out['run_id']} ({row['operation']} of {row['deployment']})")
    state.output.note(f"follow it: iac logs {out['run_id']} --follow")
