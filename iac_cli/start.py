"""`iac plan|apply|destroy`: start a run and follow it to its end (or its approval)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from iac_cli.context import F, State, json_option, pass_state
from iac_cli.watch import (
    Followed,
    approval_hint,
    follow_run,
    outcome_line,
)

INTERRUPTED = 130
POLICIES = ("never", "always", "no-destroy")


def report(state: State, followed: Followed, as_json: bool) -> int:
    """Say how the followed run stands; the exit code is the run's outcome."""
    run = followed.run
    if as_json:
        state.output.json(run)
    if followed.stopped_for_approval:
        state.output.note(approval_hint(run), "bold")
    else:
        message, style = outcome_line(run)
        state.output.note(message, style)
    return followed.exit_code


def follow_and_report(
    state: State,
    run_id: int,
    *,
    as_json: bool,
    after_seq: int = 0,
    stop_at_approval: bool,
) -> int:
    try:
        followed = follow_run(
            state.api,
            run_id,
            state.output,
            after_seq=after_seq,
            stop_at_approval=stop_at_approval,
            # With --json stdout is for the JSON document only; the log goes to stderr.
            log_to=sys.stderr if as_json else sys.stdout,
        )
    except KeyboardInterrupt:
        state.output.note(
            f"stopped following run {run_id}; it goes on. Follow it again: iac logs {run_id} "
            f"--follow; cancel it: iac runs cancel {run_id}",
            "yellow",
        )
        return INTERRUPTED
    return report(state, followed, as_json)


def start_run(
    state: State,
    name: str,
    operation: str,
    *,
    priority: int | None,
    auto_approve: str | None,
    follow: bool,
    config_version: int | None,
    as_json: bool,
    comment: str = "",
) -> int:
    body: dict[str, Any] = {"deployment": name, "operation": operation, "comment": comment}
    if priority is not None:
        body["priority"] = priority
    if auto_approve:
        body["auto_approve"] = auto_approve
    if config_version is not None:
        body["config_version"] = config_version
    run = state.api.json("POST", "/runs", json=body)
    run_id = run["id"]
    state.output.note(
        f"run {run_id}: {operation} of {name}, configuration version {run['config_version']}, "
        f"priority {run['priority']}",
        "bold",
    )
    if not follow:
        if as_json:
            state.output.json(run)
        else:
            state.output.result(str(run_id))
            state.output.note(f"follow it: iac logs {run_id} --follow")
        return 0
    # A policy that may not apply this plan (never, no-destroy) stops at the approval.
    return follow_and_report(state, run_id, as_json=as_json, stop_at_approval=operation != "plan")


def run_options(with_auto_approve: bool) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        f = json_option(f)
        f = click.option(
            "--config-version", type=int, help="Configuration version to use (default: latest)."
        )(f)
        f = click.option(
            "--no-follow",
            "no_follow",
            is_flag=True,
            help="Print the run id and return at once instead of following the log.",
        )(f)
        f = click.option("--comment", default="", help="Kept in the run's history.")(f)
        if with_auto_approve:
            f = click.option(
                "--auto-approve",
                type=click.Choice(POLICIES),
                is_flag=False,
                flag_value="always",
                default=None,
                help="Apply without a person's approval: alone (or =always) always; "
                "=no-destroy when the plan deletes and replaces nothing; =never waits. "
                "Default: the deployment's policy.",
            )(f)
        f = click.option(
            "--priority", type=int, help="Higher runs first (default: the deployment's)."
        )(f)
        return click.argument("name")(f)

    return decorate


@click.command("plan")
@run_options(with_auto_approve=False)
@pass_state
def plan(
    state: State,
    name: str,
    priority: int | None,
    comment: str,
    no_follow: bool,
    config_version: int | None,
    as_json: bool,
) -> int:
    """Plan deployment NAME and follow the log. Exit code: 0 if the plan succeeded."""
    return start_run(
        state,
        name,
        "plan",
        priority=priority,
        auto_approve=None,
        follow=not no_follow,
        config_version=config_version,
        as_json=as_json,
        comment=comment,
    )


def _apply_like(operation: str) -> click.Command:
    @click.command(operation)
    @run_options(with_auto_approve=True)
    @pass_state
    def command(
        state: State,
        name: str,
        priority: int | None,
        auto_approve: str | None,
        comment: str,
        no_follow: bool,
        config_version: int | None,
        as_json: bool,
    ) -> int:
        return start_run(
            state,
            name,
            operation,
            priority=priority,
            auto_approve=auto_approve,
            follow=not no_follow,
            config_version=config_version,
            as_json=as_json,
            comment=comment,
        )

    verb = "apply" if operation == "apply" else "destroy everything in"
    command.help = (
        f"Plan, then {verb} deployment NAME once approved, following the log. Stops with exit "
        "code 0 when the plan awaits approval (review it with `iac runs plan ID`, approve "
        "with `iac runs approve ID`); when the approval policy applies it, follows to the "
        "end. Exit code: 0 succeeded, 1 failed, canceled or timed out."
    )
    return command


apply = _apply_like("apply")
destroy = _apply_like("destroy")
