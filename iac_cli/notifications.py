"""`iac notifications`: where the backend sends run and drift events (webhooks, Slack),
a test to one of them, and what was delivered."""

from __future__ import annotations

from typing import Any

import click

from iac_cli.context import State, json_option, pass_state
from iac_cli.errors import EXIT_USAGE, CliError, UsageError
from iac_cli.output import show_time
from iac_cli.prompts import confirm, from_stdin

API = "/notifications/destinations"
EVENTS = (
    "run.created",
    "run.awaiting_approval",
    "run.succeeded",
    "run.failed",
    "run.canceled",
    "drift.detected",
    "drift.check_failed",
)


@click.group()
def notifications() -> None:
    """Notification destinations: webhooks and Slack incoming webhooks the backend sends
    run and drift events to (docs/notifications.md)."""


def find(state: State, name_or_id: str) -> dict[str, Any]:
    """The destination named NAME-or-ID (a name first, then an id), or a one-line error."""
    rows = state.api.get(API)
    for row in rows:
        if row["name"] == name_or_id:
            return dict(row)
    if name_or_id.isdigit():
        for row in rows:
            if row["id"] == int(name_or_id):
                return dict(row)
    raise CliError(
        f"no notification destination named {name_or_id!r} (see `iac notifications list`)",
        EXIT_USAGE,
    )


def scope_of(row: dict[str, Any]) -> str:
    return row["deployment"] or "every deployment"


def events_of(row: dict[str, Any]) -> str:
    return "all" if list(row["events"]) == list(EVENTS) else ",".join(row["events"])


@notifications.command("list")
@json_option
@pass_state
def list_destinations(state: State, as_json: bool) -> None:
    """List the destinations: name, kind, host (never the URL), events, deliveries."""
    rows = state.api.get(API)
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note("no notification destinations: iac notifications add NAME --url URL")
        return
    state.output.table(
        [
            "ID",
            "NAME",
            "KIND",
            "HOST",
            "FOR",
            "EVENTS",
            "ENABLED",
            "DELIVERED",
            "PENDING",
            "FAILED",
        ],
        [
            [
                str(r["id"]),
                r["name"],
                r["kind"],
                r["url_host"],
                scope_of(r),
                events_of(r),
                "yes" if r["enabled"] else "no",
                str(r["deliveries"].get("delivered", 0)),
                str(r["deliveries"].get("pending", 0)),
                str(r["deliveries"].get("failed", 0)),
            ]
            for r in rows
        ],
    )


@notifications.command("add")
@click.argument("name")
@click.option(
    "--url",
    required=True,
    envvar="IAC_DESTINATION_URL",
    show_envvar=True,
    help="Where events are POSTed (http or https); '-' reads it from stdin. A Slack URL is "
    "a credential: give it by stdin or the environment, not on the command line.",
)
@click.option(
    "--kind",
    type=click.Choice(["webhook", "slack"]),
    default="webhook",
    show_default=True,
    help="webhook: the event's JSON, signed; slack: a Slack-compatible incoming webhook.",
)
@click.option(
    "--event",
    "events",
    type=click.Choice(EVENTS),
    multiple=True,
    metavar="EVENT",
    help=f"An event to send, repeatable: {', '.join(EVENTS)} (default: all).",
)
@click.option("--deployment", help="Only this deployment's events (default: every deployment).")
@click.option(
    "--secret",
    envvar="IAC_DESTINATION_SECRET",
    show_envvar=True,
    help="A webhook's signing secret, 16+ characters, '-' to read it from stdin (default: "
    "a random one, printed once).",
)
@json_option
@pass_state
def add_destination(
    state: State,
    name: str,
    url: str,
    kind: str,
    events: tuple[str, ...],
    deployment: str | None,
    secret: str | None,
    as_json: bool,
) -> None:
    """Add the destination NAME. A webhook's signing secret is printed this once."""
    if url == "-" and secret == "-":
        raise UsageError("only one of --url and --secret can be read from stdin ('-')")
    url = from_stdin(url, "the URL") or ""
    secret = from_stdin(secret, "the signing secret")
    body: dict[str, Any] = {"name": name, "url": url, "kind": kind}
    if events:
        body["events"] = list(events)
    if deployment:
        body["deployment"] = deployment
    if secret is not None:
        body["secret"] = secret
    created = state.api.json("POST", API, json=body)
    if as_json:
        state.output.json(created)
        return
    state.output.result(
        f"added {created['kind']} destination {created['name']} (id {created['id']}) to "
        f"{created['url_host']} for {scope_of(created)}, events: {events_of(created)}"
    )
    if created.get("secret") and secret is None:
        state.output.note("its signing secret; store it now, it is not shown again:")
        click.echo(created["secret"])


@notifications.command("remove")
@click.argument("name_or_id", metavar="NAME-or-ID")
@click.option(
    "--force",
    is_flag=True,
    help="No confirmation, and remove it even with deliveries waiting to be sent.",
)
@pass_state
def remove_destination(state: State, name_or_id: str, force: bool) -> None:
    """Remove a destination with its deliveries and their history. Asks you to type its
    name on a terminal; needs --force when stdin is not a terminal or deliveries wait to
    be sent (`iac notifications disable` keeps them instead)."""
    row = find(state, name_or_id)
    if not force:
        pending = int(row["deliveries"].get("pending", 0))
        if pending:
            raise CliError(
                f"notification destination {row['name']} has {pending} deliveries waiting "
                f"to be sent: disable it to keep them (iac notifications disable "
                f"{row['name']}), or remove it with --force",
                EXIT_USAGE,
            )
        confirm(
            "notification destination",
            row["name"],
            f"Removing notification destination {row['name']} drops its configuration "
            "(URL, signing secret) and the record of what was delivered to it; it cannot be "
            "undone. `iac notifications disable` stops it and keeps both.",
            "remove",
        )
    params = {"force": "true"} if force else None
    state.api.request("DELETE", f"{API}/{row['id']}", params=params)
    state.output.result(f"removed notification destination {row['name']}")


def _switch(state: State, name_or_id: str, enabled: bool) -> None:
    row = find(state, name_or_id)
    state.api.json("PATCH", f"{API}/{row['id']}", json={"enabled": enabled})
    state.output.result(
        f"{'enabled' if enabled else 'disabled'} notification destination {row['name']}"
    )


@notifications.command("enable")
@click.argument("name_or_id", metavar="NAME-or-ID")
@pass_state
def enable_destination(state: State, name_or_id: str) -> None:
    """Send events to the destination again (what waited is sent)."""
    _switch(state, name_or_id, True)


@notifications.command("disable")
@click.argument("name_or_id", metavar="NAME-or-ID")
@pass_state
def disable_destination(state: State, name_or_id: str) -> None:
    """Stop sending to the destination: it gets no new events meanwhile."""
    _switch(state, name_or_id, False)


@notifications.command("test")
@click.argument("name_or_id", metavar="NAME-or-ID")
@pass_state
def test_destination(state: State, name_or_id: str) -> None:
    """Send a test event to the destination (delivered like any other)."""
    row = find(state, name_or_id)
    sent = state.api.json("POST", f"{API}/{row['id']}/test")
    state.output.result(
        f"test notification queued for {row['name']}: delivery {sent['delivery_id']} "
        f"(iac notifications deliveries {row['name']})"
    )


def codes(delivery: dict[str, Any]) -> str:
    """Each attempt's HTTP status ('-' when there was no answer), oldest first."""
    return ",".join(
        str(a["status_code"]) if a["status_code"] is not None else "-"
        for a in delivery["attempt_log"]
    )


@notifications.command("deliveries")
@click.argument("name_or_id", metavar="NAME-or-ID")
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="How many."
)
@json_option
@pass_state
def list_deliveries(state: State, name_or_id: str, limit: int, as_json: bool) -> None:
    """The destination's latest deliveries, newest first, with each attempt's status."""
    row = find(state, name_or_id)
    rows = state.api.get(f"{API}/{row['id']}/deliveries", limit=limit)
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note(f"nothing sent to {row['name']} yet")
        return
    state.output.table(
        ["ID", "EVENT", "RUN", "STATUS", "ATTEMPTS", "CODES", "CREATED", "LAST ERROR"],
        [
            [
                str(d["id"]),
                d["event"],
                str(d["run_id"]) if d["run_id"] is not None else "-",
                d["status"],
                str(d["attempts"]),
                codes(d) or "-",
                show_time(d["created_at"]),
                d["last_error"] or "",
            ]
            for d in rows
        ],
    )
