"""Drift: a deployment's verdict and its history of checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DriftCheckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run_id: int
    status: str
    checked_at: datetime
    detail: dict[str, Any] = Field(
        description="resources (address, action) and outputs that drifted, or the reason a "
        "check failed; never a value."
    )


class DriftOut(BaseModel):
    deployment: str
    status: str = Field(description="in_sync, drifted, check_failed or unknown (never checked).")
    checked_at: datetime | None
    run_id: int | None = Field(description="The drift check that gave the status.")
    detail: dict[str, Any] = Field(default_factory=dict)
    history: list[DriftCheckOut] | None = Field(
        default=None, description="The recent checks, newest first (one deployment's view)."
    )
