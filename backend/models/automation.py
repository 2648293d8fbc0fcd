"""What runs and speaks without a person: schedules, drift checks, notification
destinations, the outbox and its deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import NEVER_REUSED, Base, utcnow
from backend.models.vocab import (
    ApprovePolicy,
    DeliveryStatus,
)


class Schedule(Base):
    """A deployment's recurring run: a 5-field cron expression in a time zone. Its
    `next_run_at` is the claim: the backend that moves it on (one conditional UPDATE)
    queues the run, so any number of backends queue one run per due time."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "enabled", "next_run_at"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    cron: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    kind: Mapped[str] = mapped_column(String(16))  # ScheduleKind
    auto_approve: Mapped[str] = mapped_column(String(16), default=ApprovePolicy.NEVER.value)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]  # the due time last queued
    last_run_id: Mapped[int | None]
    # Why the last due time queued nothing (a run of this schedule was still queued).
    last_skipped: Mapped[str] = mapped_column(Text, default="")
    # The token that created or last changed it: its runs are that token's (four eyes
    # compares the id), and they are queued only while it may still start them.
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_by_token: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftCheck(Base):
    """One drift check's verdict, kept as the deployment's history of checks."""

    __tablename__ = "drift_checks"
    __table_args__ = (Index("ix_drift_checks_deployment", "deployment_id", "id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    run_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # DriftStatus
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    # {"resources": [addresses that drifted], "outputs": [names], "reason": "..."}: from
    # the redacted plan review, never a value.
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class NotificationDestination(Base):
    """Where notifications go: global (deployment_id None) or one deployment's, with the
    events it wants. The URL (a Slack webhook's holds its credential) and the signing
    secret are sealed."""

    __tablename__ = "notification_destinations"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # DestinationKind
    url_encrypted: Mapped[bytes]
    url_host: Mapped[str] = mapped_column(String(255))  # shown in lists instead of the URL
    secret_encrypted: Mapped[bytes | None]
    events: Mapped[list[str]] = mapped_column(JSON(), default=list)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationEvent(Base):
    """The outbox: an event written in the transaction of the change that caused it, with
    one delivery per destination that wanted it."""

    __tablename__ = "notification_events"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # NotifyEvent
    deployment_id: Mapped[int | None]
    run_id: Mapped[int | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # no secret, no log line
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """One event to one destination: claimed by one backend at a time (`claimed_until`),
    retried with backoff until delivered or out of attempts."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "destination_id"),
        Index("ix_notification_deliveries_due", "status", "next_attempt_at"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("notification_events.id", ondelete="CASCADE"))
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("notification_destinations.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    backend_id: Mapped[str] = mapped_column(String(128))
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str] = mapped_column(Text, default="")
