"""What the CLI prints: Rich tables and notes for people, JSON for scripts.

stdout carries the result (a table, JSON, or a run's log lines); stderr carries notes,
progress and errors, so ``iac ... --json | jq`` and ``iac apply X > plan.log`` stay clean.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Not a terminal (a pipe, a CI log): wide enough that rows do not wrap.
PIPE_WIDTH = 200
# SGR sequences, the only escapes terraform writes (colours, bold).
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _console(stderr: bool, color: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, width=wide, highlight=False, soft_wrap=False, no_color=not color)


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class Output:
    """The two streams of one command. ``color=False`` (``--no-color`` or ``NO_COLOR``)
    also strips terraform's own colours from log lines."""

    def __init__(self, color: bool = True) -> None:
        self.color = color
        self.out = _console(stderr=False, color=color)
        self.err = _console(stderr=True, color=color)

    def clean(self, text: str) -> str:
        """Log text as terraform wrote it, less its colours when colour is off."""
        return text if self.color else strip_ansi(text)

    def log(self, text: str, to: TextIO) -> None:
        to.write(self.clean(text))
        to.flush()

    def json(self, value: Any) -> None:
        # Plain print: no Rich markup or wrapping may touch machine-readable output.
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def note(self, message: str, style: str = "") -> None:
        self.err.print(Text(message, style=style))

    def result(self, message: str) -> None:
        self.out.print(Text(message))

    def _print_table(self, table: Table) -> None:
        # Rich pads every cell to its column's width; drop the padding at the end of lines.
        with self.out.capture() as captured:
            self.out.print(table)
        text = "".join(line.rstrip() + "\n" for line in captured.get().splitlines())
        self.out.file.write(text)
        self.out.file.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        self._print_table(table)

    def fields(self, pairs: Iterable[tuple[str, str]]) -> None:
        table = Table(box=None, show_header=False, pad_edge=False, show_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(key, Text(value))
        self._print_table(table)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def show_time(value: str | None) -> str:
    parsed = parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"


def show_duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def run_duration(run: dict[str, Any]) -> str:
    """The run's running time: executing on runners, not waiting in the queue or for
    approval (from the backend's running_seconds; an older backend: start to end)."""
    if run.get("running_seconds") is not None:
        return show_duration(float(run["running_seconds"])) if run.get("started_at") else "-"
    start = parse_time(run.get("started_at"))
    if start is None:
        return "-"
    end = parse_time(run.get("ended_at")) or datetime.now(UTC)
    return show_duration((end - start).total_seconds())


def run_waited(run: dict[str, Any]) -> str:
    """The run's waiting time: queued and awaiting approval."""
    waited = run.get("waiting_seconds")
    return "-" if waited is None else show_duration(float(waited))


def show_labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"
