"""`iac audit`: the backend's audit log (unscoped admin tokens), printed or followed, and
whether its hash chain holds."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from iac_cli.context import State, json_option, pass_state
from iac_cli.output import show_time

FOLLOW_EVERY = 2.0  # seconds between two polls while following
PAGE = 1000


def _rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(e["id"]),
            show_time(e["at"]),
            e["actor"],
            e["source"] or "-",
            e["action"],
            e["target"] or "-",
            e["result"],
        ]
        for e in entries
    ]


@click.group("audit", invoke_without_command=True)
@click.option("--actor", help="Only entries of this token name ('anonymous': refused ones).")
@click.option("--action", help="Only actions containing this, e.g. approve.")
@click.option("--target", help="Only targets containing this, e.g. name=web.")
@click.option("--since", help="Only entries at or after this ISO time.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries as they come.")
@json_option
@pass_state
@click.pass_context
def audit(
    ctx: click.Context,
    state: State,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    follow: bool,
    as_json: bool,
) -> int:
    """The audit log, oldest first: who did what, from where, and the result. --json
    prints a JSON list (with --follow, one JSON entry per line)."""
    if ctx.invoked_subcommand is not None:
        return 0
    params = {"actor": actor, "action": action, "target": target, "since": since}
    after = 0
    while True:
        found: list[dict[str, Any]] = []
        while True:  # every page there is now
            page = state.api.get("/audit", **params, after_id=after, limit=PAGE)
            found += page
            if len(page) < PAGE:
                break
            after = page[-1]["id"]
        if found:
            after = found[-1]["id"]
        if as_json and follow:
            for entry in found:
                sys.stdout.write(json.dumps(entry) + "\n")
            sys.stdout.flush()
        elif as_json:
            state.output.json(found)
        elif found and follow:  # a line per entry as it comes: columns cannot be aligned
            for row in _rows(found):
                state.output.result("  ".join(row))
        elif found:
            state.output.table(
                ["ID", "AT", "ACTOR", "SOURCE", "ACTION", "TARGET", "RESULT"], _rows(found)
            )
        elif not follow:
            state.output.note("no audit entries")
        if not follow:
            return 0
        time.sleep(FOLLOW_EVERY)


@audit.command("verify")
@json_option
@pass_state
def verify(state: State, as_json: bool) -> int:
    """Whether the audit log's hash chain holds; exit 1 with the first entry that does not
    (edited, or after a removed one)."""
    verdict = state.api.json("GET", "/audit/verify")
    if as_json:
        state.output.json(verdict)
    elif verdict["ok"]:
        state.output.result(
            f"audit log verified: {verdict['entries']} entries, the chain holds; "
            f"head: entry {verdict['head_id']} {verdict['head']}"
        )
    else:
        state.output.note(
            f"audit log broken at entry {verdict['broken_at']}: {verdict['reason']}", "red"
        )
    return 0 if verdict["ok"] else 1
