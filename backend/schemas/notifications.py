"""Request and response bodies of the notification routes (`backend.api.routes.notifications`).

A destination's URL is accepted, never returned (`url_host` stands for it); a webhook's
signing secret is returned once, by the request that created it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.store.notifications import SUBSCRIBABLE

EVENTS_DOC = f"Events to send: {', '.join(SUBSCRIBABLE)}. Default: all of them."


class DestinationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="Unique name, e.g. 'ops-slack'.")
    url: str = Field(
        max_length=2048,
        description="http(s) URL the events are POSTed to; stored encrypted, never shown again.",
    )
    kind: Literal["webhook", "slack"] = Field(
        default="webhook",
        description="webhook: the event's JSON, signed; slack: a Slack-compatible incoming "
        "webhook message.",
    )
    events: list[str] | None = Field(default=None, max_length=32, description=EVENTS_DOC)
    deployment: str | None = Field(
        default=None,
        max_length=64,
        description="Only this deployment's events (default: every deployment's; an "
        "unscoped admin's).",
    )
    secret: str | None = Field(
        default=None,
        max_length=256,
        description="A webhook's signing secret (16+ characters); default: a random one, "
        "returned once.",
    )


class DestinationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, description="Whether events are sent to it.")
    events: list[str] | None = Field(default=None, max_length=32, description=EVENTS_DOC)


class DestinationOut(BaseModel):
    id: int
    name: str
    kind: str
    url_host: str = Field(description="The URL's host (and port): the URL itself is secret.")
    deployment: str | None = Field(description="Its deployment; null: every deployment.")
    events: list[str]
    enabled: bool
    signed: bool = Field(description="Whether requests carry X-Iac-Signature.")
    deliveries: dict[str, int] = Field(description="Its deliveries by status.")
    created_at: datetime


class DestinationCreated(DestinationOut):
    secret: str | None = Field(
        description="The signing secret (webhooks): shown this once, store it now."
    )


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    backend_id: str
    status_code: int | None
    duration_ms: int
    error: str


class DeliveryOut(BaseModel):
    id: int
    event: str
    event_id: int
    run_id: int | None
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: datetime | None = Field(description="When a pending one is tried next.")
    delivered_at: datetime | None
    last_error: str
    created_at: datetime
    attempt_log: list[AttemptOut] = Field(description="Each attempt, oldest first.")


class SentTest(BaseModel):
    delivery_id: int = Field(description="The test's delivery: see /deliveries.")
    event_id: int
