"""The audit log: its entries and the verdict on its hash chain."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    token_id: int | None
    actor: str = Field(description="The token's name, 'anonymous' or 'system'.")
    source: str = Field(description="The client's address.")
    action: str = Field(description="e.g. 'POST /runs/{run_id}/approve'.")
    target: str = Field(description="The path's values and query, e.g. 'run_id=12'.")
    result: str = Field(description="The HTTP status, and the reason of a refusal.")
    prev_hash: str
    hash: str


class AuditVerdict(BaseModel):
    entries: int
    ok: bool
    broken_at: int | None = Field(description="The first entry that does not hold.")
    reason: str
    head_id: int = Field(description="The newest entry's id (when the chain holds).")
    head: str = Field(
        description="The newest entry's hash: keep it elsewhere to detect a chain cut short "
        "or rewritten whole."
    )
