"""Following one run from the terminal: a status line while it is queued, its log lines as
they come, a note at each status change, and where to stop (the end, or approval).
"""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from rich.status import Status as RichStatus

from iac_cli.client import Api, ServerError, Unreachable
from iac_cli.logstream import GIVE_UP_AFTER, End, Lines, LogStream, Status
from iac_cli.output import Output, parse_time, run_duration, show_duration

TERMINAL = frozenset({"succeeded", "failed", "canceled", "timed_out"})
QUEUE_POLL_INTERVAL = 0.5


@dataclass(frozen=True)
class Followed:
    run: dict[str, Any]
    stopped_for_approval: bool

    @property
    def exit_code(self) -> int:
        if self.stopped_for_approval:
            return 0
        return 0 if self.run["status"] == "succeeded" else 1


def queue_line(run: dict[str, Any]) -> str:
    created = parse_time(run.get("created_at"))
    elapsed = (datetime.now(UTC) - created).total_seconds() if created else 0.0
    reason = run.get("wait_reason") or "waiting for the dispatcher"
    return f"run {run['id']} {run['status']} {show_duration(elapsed)}: {reason}"


class QueueDisplay:
    """On a terminal, one live Rich line (spinner, elapsed, state, wait reason); elsewhere
    (a CI log) a plain line each time the state or the reason changes."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.live: RichStatus | None = None
        self.last_plain = ""

    def __enter__(self) -> QueueDisplay:
        if self.output.err.is_terminal:
            self.live = self.output.err.status("")
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, run: dict[str, Any]) -> None:
        line = queue_line(run)
        if self.live is not None:
            self.live.update(line)
            return
        plain = f"{run['status']}: {run.get('wait_reason') or ''}"
        if plain != self.last_plain:
            self.last_plain = plain
            self.output.note(line, "dim")


def poll_run(api: Api, run_id: int) -> dict[str, Any]:
    """GET the run, riding out a backend that is briefly unreachable (restarting)."""
    deadline = time.monotonic() + GIVE_UP_AFTER
    while True:
        try:
            return api.run(run_id)
        except (Unreachable, ServerError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def wait_while_queued(api: Api, run: dict[str, Any], output: Output) -> dict[str, Any]:
    with QueueDisplay(output) as display:
        while run["status"] == "queued":
            display.update(run)
            time.sleep(QUEUE_POLL_INTERVAL)  # the refresh rate of the status line
            run = poll_run(api, run["id"])
    return run


def describe_status(run: dict[str, Any]) -> str:
    status = run["status"]
    where = f" on {run['runner_id']}" if run.get("runner_id") else ""
    return f"run {run['id']}: {status}{where}"


def follow_run(
    api: Api,
    run_id: int,
    output: Output,
    *,
    after_seq: int = 0,
    stop_at_approval: bool = True,
    log_to: TextIO | None = None,
) -> Followed:
    """Print the run's log lines after ``after_seq`` until it ends (or, with
    ``stop_at_approval``, until it waits for approval)."""
    sink = log_to if log_to is not None else sys.stdout

    def retrying(reason: str) -> None:
        output.note(f"{reason}; resuming after line {stream.last_seq}", "yellow")

    stream = LogStream(api, run_id, after_seq, on_retry=retrying)
    run = api.run(run_id)  # no retry yet: a backend never reached is an error at once
    while True:
        if run["status"] == "queued":
            run = wait_while_queued(api, run, output)
        stream.status = None  # a fresh connection: hear the current status again
        requeued = False
        with closing(stream.events()) as events:
            for event in events:
                if isinstance(event, Lines):
                    output.log(event.text + "\n", sink)
                elif isinstance(event, Status):
                    if event.status == "queued":
                        requeued = True  # back in the queue (e.g. its runner was full)
                        break
                    if event.status in TERMINAL:
                        continue  # said at the end, with the outcome
                    run = poll_run(api, run_id)
                    if event.status == "awaiting_approval":
                        if stop_at_approval:
                            return Followed(run, stopped_for_approval=True)
                        output.note(
                            f"run {run_id} is awaiting approval: iac runs approve {run_id}",
                            "bold",
                        )
                        continue
                    output.note(describe_status({**run, "status": event.status}), "dim")
                elif isinstance(event, End):
                    return Followed(poll_run(api, run_id), stopped_for_approval=False)
        if not requeued:
            # The stream ended without `end`: LogStream only does that by raising.
            raise AssertionError("log stream ended without an end event")
        run = poll_run(api, run_id)


def outcome_line(run: dict[str, Any]) -> tuple[str, str]:
    """(message, style) summing up how a finished run ended."""
    run_id, status, op = run["id"], run["status"], run["operation"]
    took = run_duration(run)
    if status == "succeeded":
        detail = ""
        if op == "plan" or run.get("has_changes") is False:
            detail = ", plan has changes" if run.get("has_changes") else ", no changes"
        if run.get("changes") and run.get("has_changes"):
            detail = f", {plan_line(run['changes'])}"
        waited = run.get("waiting_seconds")
        if waited:
            took += f" running, {show_duration(float(waited))} waiting"
        return f"run {run_id} succeeded ({op}{detail}, {took})", "green"
    # The error message says how the tool ended (exit code or signal) where it ran at all.
    reason = f": {run['error_msg']}" if run.get("error_msg") else ""
    code = run.get("exit_code")
    suffix = f" (exit code {code})" if code is not None and not reason else ""
    return f"run {run_id} {status}{reason}{suffix}", "red"


def plan_line(changes: dict[str, int] | None) -> str:
    """The plan's counts as terraform words them, with replacements counted apart."""
    if not changes:
        return ""
    return (
        f"Plan: {changes['add']} to add, {changes['change']} to change, "
        f"{changes['destroy']} to destroy; {changes['replace']} to replace"
    )


def short_counts(changes: dict[str, int] | None) -> str:
    """`+2 ~1 -0` (and `±1` for replacements) for lists."""
    if not changes:
        return "-"
    text = f"+{changes['add']} ~{changes['change']} -{changes['destroy']}"
    return text + (f" ±{changes['replace']}" if changes.get("replace") else "")


def approval_hint(run: dict[str, Any]) -> str:
    run_id = run["id"]
    summary = plan_line(run.get("changes"))
    return (
        (f"{summary}\n" if summary else "")
        + f"run {run_id} is awaiting approval. Review it: iac runs plan {run_id}; approve it: "
        f"iac runs approve {run_id} --follow   (or discard it: iac runs discard {run_id})"
    )
