"""`iac runners`: register, list, show and remove the runner servers the backend dispatches to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from iac_cli.client import seg
from iac_cli.context import State, json_option, labels_option, pass_state, to_labels
from iac_cli.errors import UsageError
from iac_cli.output import show_labels, show_time


@click.group()
def runners() -> None:
    """Runner servers (iac-runner-server) the backend sends runs to."""


def read_pem(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def tools_of(runner: dict[str, Any]) -> str:
    tools = (runner.get("info") or {}).get("tools") or []
    return ",".join(f"{t.get('name')} {t.get('version', '')}".strip() for t in tools) or "-"


def effective_labels(runner: dict[str, Any], *, sources: bool) -> str:
    """The labels routing matches on (registered merged with reported); with `sources`,
    where each came from, e.g. provider=aws (reported, registered: gcp)."""
    labels = runner.get("effective_labels")
    if labels is None:  # a backend before effective labels: the registered ones
        return show_labels(runner.get("labels"))
    parts = []
    for label in labels:
        text = f"{label['key']}={label['value']}"
        if sources:
            origin = label["source"]
            if label.get("registered_value") is not None:
                origin += f", registered: {label['registered_value']}"
            text += f" ({origin})"
        parts.append(text)
    return ", ".join(parts) if sources else ",".join(parts) or "-"


def load_of(runner: dict[str, Any]) -> str:
    info = runner.get("info") or {}
    if "max_concurrent" not in info:
        return "-"
    return f"{info.get('active', 0)}/{info['max_concurrent']}"


@runners.command("list")
@json_option
@pass_state
def list_runners(state: State, as_json: bool) -> None:
    """List registered runners with their health, load and labels (the ones routing uses:
    registered merged with those the runner reports)."""
    rows = state.api.get("/runners")
    if as_json:
        state.output.json(rows)
        return
    if not rows:
        state.output.note("no runners registered: iac runners add NAME HOST:PORT")
        return
    state.output.table(
        ["NAME", "ADDRESS", "STATUS", "LABELS", "LOAD", "TOOLS", "LAST SEEN"],
        [
            [
                r["name"],
                r["address"],
                r["status"],
                effective_labels(r, sources=False),
                load_of(r),
                tools_of(r),
                show_time(r.get("last_seen")),
            ]
            for r in rows
        ],
    )


@runners.command("show")
@click.argument("name")
@json_option
@pass_state
def show_runner(state: State, name: str, as_json: bool) -> None:
    """Show one runner, with its last GetInfo answer and where each label came from."""
    runner = state.api.get(f"/runners/{seg(name)}")
    if as_json:
        state.output.json(runner)
        return
    state.output.fields(
        [
            ("name", runner["name"]),
            ("address", runner["address"]),
            ("status", runner["status"]),
            ("labels", effective_labels(runner, sources=True) or "-"),
            ("registered labels", show_labels(runner["labels"])),
            ("load", load_of(runner)),
            ("tools", tools_of(runner)),
            ("token", "yes" if runner["has_token"] else "no"),
            ("tls", "yes" if runner["tls"] else "no"),
            ("last seen", show_time(runner.get("last_seen"))),
            ("registered", show_time(runner.get("created_at"))),
        ]
    )


@runners.command("add")
@click.argument("name")
@click.argument("address")
@labels_option("A label of the runner, e.g. provider=aws (repeatable).")
@click.option("--token", "runner_token", help="Bearer token the runner server expects.")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificate (PEM) to verify the runner's TLS certificate.",
)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate (mTLS)."
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Client key (mTLS)."
)
@json_option
@pass_state
def add_runner(
    state: State,
    name: str,
    address: str,
    labels: tuple[tuple[str, str], ...],
    runner_token: str | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    as_json: bool,
) -> None:
    """Register the runner server NAME listening at ADDRESS (host:port)."""
    body = {
        "name": name,
        "address": address,
        "labels": to_labels(labels),
        "token": runner_token,
        "tls_ca_pem": read_pem(tls_ca, "--tls-ca"),
        "tls_cert_pem": read_pem(tls_cert, "--tls-cert"),
        "tls_key_pem": read_pem(tls_key, "--tls-key"),
    }
    runner = state.api.json("POST", "/runners", json={k: v for k, v in body.items() if v})
    if as_json:
        state.output.json(runner)
        return
    state.output.result(
        f"registered runner {runner['name']} at {runner['address']} "
        f"(labels {show_labels(runner['labels'])})"
    )


@runners.command("remove")
@click.argument("name")
@pass_state
def remove_runner(state: State, name: str) -> None:
    """Forget the runner NAME (it must have no active run)."""
    state.api.request("DELETE", f"/runners/{seg(name)}")
    state.output.result(f"removed runner {name}")
