"""What the API's bodies share: the approval policies' names and their description."""

from __future__ import annotations

from typing import Literal

ApprovePolicyName = Literal["never", "always", "no-destroy"]
POLICIES = (
    "never: a person approves; always: no approval; no-destroy: no approval when the plan "
    "deletes and replaces nothing."
)
