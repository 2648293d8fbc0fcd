"""Domain errors: what went wrong, in words a user can act on.

Domain code raises these; the API layer (``backend.api.errors``) maps them to HTTP
status codes, so no domain module knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class; ``str(error)`` is the message shown to the user."""


class NotFound(DomainError):
    """The named thing does not exist."""


class Conflict(DomainError):
    """The request clashes with the current state (duplicate name, active runs, wrong lock id)."""


class Invalid(DomainError):
    """The input is malformed or breaks a rule; the message says which and how to fix it."""


class TooLarge(Invalid):
    """The input is over a configured size limit."""


class StateLocked(DomainError):
    """The deployment's Terraform state is locked by someone else; ``holder`` is their lock info."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class Unauthenticated(DomainError):
    """No credentials, or credentials that match nothing."""


class Forbidden(DomainError):
    """Valid credentials that may not do this."""
