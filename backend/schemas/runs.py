"""Runs: starting one, what the API says of one, its plan review and decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.schemas.common import POLICIES, ApprovePolicyName
from backend.store.validation import MAX_ID


class Message(BaseModel):
    detail: str


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(description="Name of the deployment to run.")
    operation: Literal["plan", "apply", "destroy", "drift"] = Field(
        description="plan: plan only; apply/destroy: plan, approval, then apply that plan; "
        "drift: a refresh-only plan that sets the deployment's drift status."
    )
    priority: int | None = Field(
        default=None, description="Higher runs first; default: the deployment's default priority."
    )
    auto_approve: ApprovePolicyName | bool | None = Field(
        default=None,
        description="When the apply goes on without approval; default: the deployment's. "
        + POLICIES
        + " true and false are always and never.",
    )
    comment: str = Field(default="", max_length=2000, description="Kept in the run's history.")
    config_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="Configuration version to use; default: the latest.",
    )


class RunEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    kind: str
    message: str
    actor: str = Field(description="Who: an API token's name, or 'system'.")
    comment: str


class RunOut(BaseModel):
    id: int
    deployment: str
    operation: str
    status: str
    priority: int
    auto_approve: str = Field(description="The run's approval policy: never, always, no-destroy.")
    created_by: str | None = Field(description="The API token that created it.")
    config_version: int
    runner_id: str | None
    tool_version: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    error_msg: str
    wait_reason: str = Field(description="Why a queued run has not started yet.")
    has_changes: bool | None
    changes: dict[str, int] | None = Field(
        default=None,
        description="The plan's counts: add, change, destroy, replace, read, import, move.",
    )
    plan_sha256: str | None = Field(
        default=None, description="SHA-256 of the saved plan; the apply checks it on the runner."
    )
    planned_at: datetime | None = None
    last_seq: int = Field(description="Seq of the last stored log line.")
    cancel_requested: str | None
    running_seconds: float = Field(
        default=0.0,
        description="Seconds a runner executed it (plan and apply phases), up to now if it "
        "has not ended.",
    )
    waiting_seconds: float = Field(
        default=0.0,
        description="Seconds it waited: queued (for a runner, or behind another run) and "
        "awaiting approval, up to now if it has not ended.",
    )
    events: list[RunEventOut] | None = Field(
        default=None, description="The run's history (on GET /runs/{id})."
    )


class PlanCounts(BaseModel):
    add: int
    change: int
    destroy: int
    replace: int
    read: int
    import_: int = Field(alias="import")
    move: int


class ResourceChangeOut(BaseModel):
    address: str
    module: str | None
    type: str
    name: str
    action: str = Field(description="create, update, delete, replace or read.")
    reason: str | None = Field(description="terraform's action_reason, e.g. replace_by_triggers.")
    changed: list[str] = Field(description="Attribute paths whose value changes.")
    forces_replacement: list[str] = Field(description="Attribute paths that force replacement.")
    before: Any = Field(description="Redacted: '(sensitive value)' where anything is secret.")
    after: Any = Field(description="Redacted; '(known after apply)' where not yet known.")
    imported: bool
    moved_from: str | None


class OutputChangeOut(BaseModel):
    name: str
    action: str
    before: Any
    after: Any
    sensitive: bool


class PlanOut(BaseModel):
    counts: PlanCounts
    resource_changes: list[ResourceChangeOut] = Field(
        description="Replacements, then deletions, updates, creations, reads."
    )
    output_changes: list[OutputChangeOut]
    resource_drift: list[ResourceChangeOut] = Field(
        description="Changes made outside terraform, found while refreshing."
    )
    errored: bool


class Decision(BaseModel):
    """The body of approve, discard and cancel (optional)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000, description="Kept in the run's history.")
