"""What the CLI asks of the person at the terminal: a typed confirmation before something
is removed, and a secret read from stdin rather than from the command line (where `ps`
and the shell's history would keep it)."""

from __future__ import annotations

import sys

import click

from iac_cli.errors import CliError, UsageError


def confirm(what: str, name: str, explanation: str, action: str) -> None:
    """Ask for `name` to be typed before `action` on `what` ("deployment", ...); anything
    else stops. Without a terminal nobody can answer: the caller's --force is needed."""
    if not sys.stdin.isatty():
        raise UsageError(
            f"stdin is not a terminal, so nobody can confirm: pass --force to {action} "
            f"{what} {name} without confirmation"
        )
    click.echo(explanation, err=True)
    typed = click.prompt(f"Type {name} to {action} it", default="", show_default=False, err=True)
    if typed.strip() != name:
        raise CliError(f"confirmation did not match: {what} {name} was not {action}d")


def from_stdin(value: str | None, what: str) -> str | None:
    """`value`, or, when it is '-', stdin's content without its final newline."""
    if value != "-":
        return value
    read = sys.stdin.read().removesuffix("\n")
    if not read:
        raise UsageError(f"{what} was to be read from stdin ('-'), which was empty")
    return read
