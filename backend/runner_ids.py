"""The name of a run's step on its runner, as a value: `<prefix>-r<run>-<phase>-<attempt>-<step>`.

The prefix is this database's (two backends on different databases that share a runner
never name a step alike); every replica names a step the same, so a backend that adopts
a run finds its steps again. The string is what the runner sees; the backend reads it back
with `StepId.parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    PLAN = "plan"  # init + plan -out=tfplan, on one runner
    APPLY = "apply"  # init + apply tfplan, on any fitting runner


_FORM = re.compile(
    r"^(?P<prefix>b[0-9a-f]+)-r(?P<run>\d+)-(?P<phase>plan|apply)-(?P<attempt>\d+)-(?P<step>[a-z]+)$"
)


@dataclass(frozen=True)
class StepId:
    prefix: str
    run: int
    phase: Phase
    attempt: int  # the run's dispatch count when the phase started
    step: str  # the step's name in the phase: init, plan, apply

    def __str__(self) -> str:
        return f"{self.prefix}-r{self.run}-{self.phase}-{self.attempt}-{self.step}"

    @property
    def work_dir(self) -> str:
        """The phase's directory on the runner (its steps share it)."""
        return f"{self.prefix}-run-{self.run}-{self.phase}-{self.attempt}"

    @classmethod
    def parse(cls, text: str) -> StepId | None:
        match = _FORM.match(text)
        if match is None:
            return None
        return cls(
            match["prefix"],
            int(match["run"]),
            Phase(match["phase"]),
            int(match["attempt"]),
            match["step"],
        )
