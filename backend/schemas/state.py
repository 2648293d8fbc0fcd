"""A deployment's terraform state: versions, lock, outputs and resources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StateVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    serial: int
    lineage: str
    md5: str
    run_id: int | None
    created_at: datetime
    deleted: bool = Field(default=False, description="A DELETE marker, not a state.")
    recovered: bool = Field(
        default=False,
        description="State terraform could not save (its errored.tfstate), kept by the backend.",
    )


class StateLockOut(BaseModel):
    lock_id: str
    run_id: int | None
    runner_id: str | None
    created_at: datetime
    info: dict[str, Any]


class StateOut(BaseModel):
    lock: StateLockOut | None
    versions: list[StateVersionOut]


class OutputOut(BaseModel):
    name: str
    value: Any = Field(description="'(sensitive value)' for a sensitive output.")
    type: Any
    sensitive: bool


class ResourceOut(BaseModel):
    address: str
    mode: str = Field(description="managed or data")
    type: str
    name: str
    module: str | None
    provider: str
