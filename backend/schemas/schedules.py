"""Request and response bodies of the schedule endpoints (the rules themselves are in
``backend.cron`` and ``backend.store.schedules``, for every caller)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.schemas.common import ApprovePolicyName

ScheduleKindName = Literal["drift", "plan", "apply"]
CRON = (
    "Five fields, minute hour day-of-month month day-of-week (e.g. '0 3 * * 1-5'), or "
    "@hourly, @daily, @weekly, @monthly, @yearly. No seconds field, no @reboot."
)
ZONE = "IANA time zone the expression is read in, e.g. 'Europe/Paris'."
KIND = "drift: a drift check (plan -refresh-only); plan; apply (approved as auto_approve says)."
APPROVE = (
    "Apply schedules only. never: a person approves each scheduled apply; always: no "
    "approval; no-destroy: no approval when the plan deletes and replaces nothing."
)


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(max_length=128, description=CRON)
    timezone: str = Field(default="UTC", max_length=64, description=ZONE)
    kind: ScheduleKindName = Field(default="drift", description=KIND)
    auto_approve: ApprovePolicyName = Field(default="never", description=APPROVE)
    enabled: bool = True


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=128, description=CRON)
    timezone: str | None = Field(default=None, max_length=64, description=ZONE)
    kind: ScheduleKindName | None = Field(default=None, description=KIND)
    auto_approve: ApprovePolicyName | None = Field(default=None, description=APPROVE)
    enabled: bool | None = Field(
        default=None,
        description="Enabling sets the next due time from now: times it was off are skipped.",
    )


class ScheduleOut(BaseModel):
    id: int
    deployment: str
    cron: str
    description: str = Field(description="The expression in words, e.g. 'At 03:00'.")
    timezone: str
    kind: str
    operation: str = Field(description="The operation of the runs it queues.")
    auto_approve: str
    enabled: bool
    next_run_at: datetime | None = Field(
        description="The next due time, UTC (none while disabled)."
    )
    upcoming: list[datetime] = Field(
        description="The next few due times in the schedule's zone (none while disabled)."
    )
    last_run_at: datetime | None = Field(description="The due time of the last run queued.")
    last_run_id: int | None
    last_skipped: str = Field(description="Why the last due time queued no run, if it did not.")
    created_by: str | None
    created_at: datetime


class TriggerOut(BaseModel):
    schedule: ScheduleOut
    run_id: int = Field(description="The run queued now.")
