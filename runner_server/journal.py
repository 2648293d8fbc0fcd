"""The runs in flight, on disk: what a runner server that was killed mid-run left behind.

Before a run's work dir is made, a record `<root>/.iac-runner/runs/<run id>.json` says
where it is, whether the run asked for it to be removed afterwards, and which state
channel the run's state went to; the record goes when the run has ended. A server that
starts finds the records of the runs it no longer knows: state terraform could not save
(`errored.tfstate`) goes to the run's backend as a recovered state version, and a work dir
the run wanted removed (it holds the run's `tfplan`, with its secrets) is removed. A work
dir whose unsaved state no backend took is kept, and logged.

The journal's directory is inside the workspace root (on the same disk as the work dirs)
and is no work dir: a request that names it is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DIRECTORY = ".iac-runner"


@dataclass(frozen=True)
class Record:
    run_id: str
    work_dir: str
    cleanup: bool
    state_channel: str


class Journal:
    def __init__(self, workspace_root: str) -> None:
        self.root = os.path.realpath(workspace_root)
        self.directory = Path(self.root) / DIRECTORY / "runs"

    def owns(self, path: str) -> bool:
        """Whether `path` (resolved) is the journal's, which no run may use."""
        mine = os.path.join(self.root, DIRECTORY)
        return path == mine or path.startswith(mine + os.sep)

    def _path(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.json"

    def open(self) -> None:
        """Make the journal's directory (at start: it then takes no room a run could see
        change)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def add(self, record: Record) -> None:
        self.open()
        path = self._path(record.run_id)
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        os.replace(temp, path)

    def remove(self, run_id: str) -> None:
        self._path(run_id).unlink(missing_ok=True)

    def leftovers(self) -> list[Record]:
        """The records of runs a previous server left (readable ones; others are dropped)."""
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                found.append(Record(**data))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
        return found
