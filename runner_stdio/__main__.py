"""`python -m runner_stdio` is the same as the `iac-runner` console script."""

from runner_stdio.cli import entry

entry()
