"""The one error type the CLI shows to its user: a message of one line and an exit code."""

from __future__ import annotations

# Exit codes: 0 success, 1 a run failed or the backend could not be used (unreachable, 5xx),
# 2 the request was wrong (bad usage, or the API refused it with a 4xx).
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Printed as ``iac: error: <message>`` on stderr; the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(CliError):
    """The command line itself is wrong (a malformed flag value, a missing file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
