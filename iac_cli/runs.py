"""`iac runs ...`: list, show, approve and cancel runs; `iac logs` prints or follows a
run's log. Starting one is `iac plan|apply|destroy` (iac_cli/start.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import httpx

from iac_cli.context import State, json_option, pass_state
from iac_cli.logstream import End, Lines, LogStream, Status
from iac_cli.output import run_duration, run_waited, show_time
from iac_cli.start import INTERRUPTED, follow_and_report
from iac_cli.watch import (
    plan_line,
    short_counts,
)

RUN_STATUSES = (
    "queued",
    "running",
    "awaiting_approval",
    "applying",
    "succeeded",
    "failed",
    "canceled",
    "timed_out",
    "discarded",
)


@click.group()
def runs() -> None:
    """Runs: list, show, review the plan, approve, discard, cancel."""


@runs.command("list")
@click.option("--deployment", help="Only runs of this deployment.")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs in this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@pass_state
def list_runs(
    state: State, deployment: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first: RUNNING is the time runners executed it, WAITED the time it
    was queued or awaiting approval."""
    rows = state.api.get("/runs", deployment=deployment, status=status, limit=limit)
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note("no runs")
        return
    state.output.table(
        [
            "ID",
            "DEPLOYMENT",
            "OPERATION",
            "STATUS",
            "CHANGES",
            "PRIORITY",
            "RUNNER",
            "CREATED",
            "RUNNING",
            "WAITED",
        ],
        [
            [
                str(r["id"]),
                r["deployment"],
                r["operation"],
                r["status"],
                short_counts(r.get("changes")),
                str(r["priority"]),
                r.get("runner_id") or "-",
                show_time(r["created_at"]),
                run_duration(r),
                run_waited(r),
            ]
            for r in rows
        ],
    )


def yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


@runs.command("show")
@click.argument("run_id", metavar="ID", type=int)
@json_option
@pass_state
def show_run(state: State, run_id: int, as_json: bool) -> None:
    """Show a run and its history."""
    run = state.api.run(run_id)
    if as_json:
        state.output.json(run)
        return
    has_changes = run.get("has_changes")
    state.output.fields(
        [
            ("run", str(run["id"])),
            ("deployment", run["deployment"]),
            ("operation", run["operation"]),
            ("status", run["status"]),
            ("wait reason", run.get("wait_reason") or "-"),
            ("priority", str(run["priority"])),
            ("auto-approve", run["auto_approve"]),
            ("created by", run.get("created_by") or "-"),
            ("configuration", f"version {run['config_version']}"),
            ("runner", run.get("runner_id") or "-"),
            ("tool version", run.get("tool_version") or "-"),
            (
                "changes",
                plan_line(run.get("changes"))
                or ("-" if has_changes is None else ("yes" if has_changes else "no")),
            ),
            ("plan sha256", run.get("plan_sha256") or "-"),
            ("created", show_time(run["created_at"])),
            ("started", show_time(run.get("started_at"))),
            ("ended", show_time(run.get("ended_at"))),
            ("running", run_duration(run)),
            ("waiting", f"{run_waited(run)} (queued and awaiting approval)"),
            ("exit code", "-" if run.get("exit_code") is None else str(run["exit_code"])),
            ("error", run.get("error_msg") or "-"),
            ("log lines", str(run["last_seq"])),
        ]
    )
    events = run.get("events") or []
    if events:
        state.output.result("")
        state.output.table(
            ["AT", "EVENT", "BY", "MESSAGE"],
            [
                [
                    show_time(e["at"]),
                    e["kind"],
                    e.get("actor") or "-",
                    (e.get("message") or "") + (f" — {e['comment']}" if e.get("comment") else ""),
                ]
                for e in events
            ],
        )


@runs.command("approve")
@click.argument("run_id", metavar="ID", type=int)
@click.option("--follow", is_flag=True, help="Follow the apply's log to the end.")
@click.option("--comment", default="", help="Kept in the run's history.")
@json_option
@pass_state
def approve(state: State, run_id: int, follow: bool, comment: str, as_json: bool) -> int:
    """Approve the plan of a run awaiting approval, so it applies. Refused when the plan is
    stale (the state or configuration changed, or it is older than the plan TTL)."""
    # Nothing is logged while a run awaits approval: the apply's lines come after this seq.
    after_seq = int(state.api.run(run_id)["last_seq"])
    run = state.api.json("POST", f"/runs/{run_id}/approve", json={"comment": comment})
    state.output.note(f"run {run_id} approved: {run['status']}", "bold")
    if follow:
        return follow_and_report(
            state, run_id, as_json=as_json, after_seq=after_seq, stop_at_approval=False
        )
    if as_json:
        state.output.json(run)
    return 0


@runs.command("cancel")
@click.argument("run_id", metavar="ID", type=int)
@click.option(
    "--force", is_flag=True, help="Kill terraform at once instead of interrupting it gracefully."
)
@click.option("--comment", default="", help="Kept in the run's history.")
@json_option
@pass_state
def cancel(state: State, run_id: int, force: bool, comment: str, as_json: bool) -> None:
    """Cancel a run: terraform gets SIGINT (stops cleanly, releases its lock), then is
    killed after a grace period; --force kills it at once."""
    run = state.api.json(
        "POST",
        f"/runs/{run_id}/cancel",
        params={"force": str(force).lower()},
        json={"comment": comment},
    )
    if as_json:
        state.output.json(run)
        return
    if run["status"] == "canceled":
        state.output.result(f"run {run_id} canceled")
    else:
        mode = "forced" if force else "graceful"
        state.output.result(f"{mode} cancel requested for run {run_id} ({run['status']})")


@click.command("logs")
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--follow", "-f", is_flag=True, help="Stream new lines live until the run ends.")
@json_option
@pass_state
def logs(state: State, run_id: int, follow: bool, as_json: bool) -> int:
    """Print the log of run RUN; with --follow, stream it live to the end (exit code: the
    run's outcome). --json --follow prints one JSON event per line."""
    if not follow:
        if as_json:
            response = state.api.request("GET", f"/runs/{run_id}/logs")
            state.output.json(
                {
                    "run_id": run_id,
                    "last_seq": int(response.headers.get("X-Last-Seq", "0")),
                    "lines": state.output.clean(response.text).splitlines(),
                }
            )
            return 0
        # Streamed to stdout as it arrives: a log of millions of lines is never held here.
        try:
            with state.api.stream(f"/runs/{run_id}/logs") as response:
                pending = ""  # a piece may end inside a line (and a colour code)
                for text in response.iter_text():
                    whole, _, pending = (pending + text).rpartition("\n")
                    if whole:
                        state.output.log(whole + "\n", sys.stdout)
                if pending:
                    state.output.log(pending, sys.stdout)
        except httpx.TransportError as exc:
            raise state.api.unreachable(exc) from None
        return 0
    if not as_json:
        return follow_and_report(state, run_id, as_json=False, stop_at_approval=False)
    try:
        for event in LogStream(state.api, run_id):
            if isinstance(event, Lines):
                lines = state.output.clean(event.text).split("\n")
                item: dict[str, Any] = {"seq": event.first_seq, "lines": lines}
            elif isinstance(event, Status):
                item = {"status": event.status}
            elif isinstance(event, End):
                item = {"end": True, "run": state.api.run(run_id)}
            sys.stdout.write(json.dumps(item) + "\n")
            sys.stdout.flush()
            if isinstance(event, End):
                return 0 if item["run"]["status"] == "succeeded" else 1
    except KeyboardInterrupt:
        return INTERRUPTED
    return 1  # not reached: the stream ends with End or an error
