"""`iac tokens`: create, list and revoke the backend's API tokens."""

from __future__ import annotations

from typing import Any

import click

from iac_cli.context import State, json_option, labels_option, pass_state, to_labels
from iac_cli.output import show_time

ROLES = ("viewer", "planner", "operator", "admin")


@click.group()
def tokens() -> None:
    """API tokens of the backend (what `--token` / IAC_TOKEN carries)."""


@tokens.command("list")
@json_option
@pass_state
def list_tokens(state: State, as_json: bool) -> None:
    """List the API tokens: names and dates, never the tokens themselves."""
    rows = state.api.get("/tokens")
    if as_json:
        state.output.json(rows)
        return
    state.output.table(
        ["ID", "NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES", "STATUS"],
        [
            [
                str(t["id"]),
                t["name"],
                t["role"],
                show_scope(t.get("scope")),
                show_time(t["created_at"]),
                show_time(t["expires_at"]) if t["expires_at"] else "never",
                "revoked" if t["revoked"] else "valid",
            ]
            for t in rows
        ],
    )


@tokens.command("create")
@click.argument("name")
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, 3650),
    help="Days until the token expires (default: never).",
)
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="viewer",
    show_default=True,
    help="What it may do: viewer reads; planner also plans; operator also applies, "
    "approves, discards and cancels; admin also manages runners, tokens, deployments, "
    "variables and state. At most your own token's role.",
)
@click.option(
    "--scope-name",
    "scope_names",
    multiple=True,
    metavar="PATTERN",
    help="Only deployments whose name matches (fnmatch, e.g. 'payments-*'); repeatable.",
)
@labels_option("Only deployments with this label; repeatable.", "--scope-label")
@json_option
@pass_state
def create_token(
    state: State,
    name: str,
    expires_in_days: int | None,
    role: str,
    scope_names: tuple[str, ...],
    labels: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Create an API token named NAME and print it: it is shown this once. Without
    --scope-* it has your own token's scope."""
    body: dict[str, object] = {"name": name, "role": role}
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    if scope_names or labels:
        body["scope"] = {"names": list(scope_names), "labels": to_labels(labels)}
    created = state.api.json("POST", "/tokens", json=body)
    if as_json:
        state.output.json(created)
        return
    state.output.note(f"token {created['id']} ({name}); store it now, it is not shown again:")
    click.echo(created["token"])


@click.command("me")
@json_option
@pass_state
def me(state: State, as_json: bool) -> None:
    """The token you are using: its name, role, scope and expiry."""
    row = state.api.json("GET", "/me")
    if as_json:
        state.output.json(row)
        return
    state.output.fields(
        [
            ("token", f"{row['name']} (id {row['id']})"),
            ("role", row["role"]),
            ("scope", row["scope_text"]),
            ("expires", show_time(row["expires_at"]) if row["expires_at"] else "never"),
            ("may", ", ".join(role for role, ok in row["may"].items() if ok)),
        ]
    )


def show_scope(scope: dict[str, Any] | None) -> str:
    if not scope:
        return "all"
    names = ", ".join(scope.get("names") or [])
    labels = ", ".join(f"{k}={v}" for k, v in (scope.get("labels") or {}).items())
    return "; ".join(part for part in (names, labels) if part)


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@pass_state
def revoke_token(state: State, token_id: int) -> None:
    """Revoke the API token with id TOKEN_ID (see `iac tokens list`)."""
    state.api.request("DELETE", f"/tokens/{token_id}")
    state.output.result(f"revoked API token {token_id}")
