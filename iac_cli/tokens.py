"""`iac tokens`: create, list and revoke the backend's API tokens."""

from __future__ import annotations

import click

from iac_cli.context import State, json_option, pass_state
from iac_cli.output import show_time


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
        ["ID", "NAME", "CREATED", "EXPIRES", "STATUS"],
        [
            [
                str(t["id"]),
                t["name"],
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
@json_option
@pass_state
def create_token(state: State, name: str, expires_in_days: int | None, as_json: bool) -> None:
    """Create an API token named NAME and print it: it is shown this once."""
    body: dict[str, object] = {"name": name}
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    created = state.api.json("POST", "/tokens", json=body)
    if as_json:
        state.output.json(created)
        return
    state.output.note(f"token {created['id']} ({name}); store it now, it is not shown again:")
    click.echo(created["token"])


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@pass_state
def revoke_token(state: State, token_id: int) -> None:
    """Revoke the API token with id TOKEN_ID (see `iac tokens list`)."""
    state.api.request("DELETE", f"/tokens/{token_id}")
    state.output.result(f"revoked API token {token_id}")
