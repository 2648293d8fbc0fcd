"""The database schema: SQLAlchemy 2.0 typed declarative models and the status vocabularies.

Alembic migrations under ``backend/migrations`` create exactly these tables; a test
compares the migrated schema with this module on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    SQLite keeps no offset, so values come back naive; this puts UTC back on them, and
    refuses naive input so no local time ever gets stored by mistake.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    APPLYING = "applying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    DISCARDED = "discarded"  # a plan awaiting approval that a person decided not to apply


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELED,
        RunStatus.TIMED_OUT,
        RunStatus.DISCARDED,
    }
)
# A run in any other status still holds its deployment (queued, executing or waiting for
# approval), so the deployment cannot be deleted under it.
ACTIVE_STATUSES = frozenset(set(RunStatus) - TERMINAL_STATUSES)
# Statuses in which a run's terraform is executing and may talk to the state endpoint.
STATE_ACCESS_STATUSES = frozenset({RunStatus.RUNNING, RunStatus.APPLYING})


class Operation(StrEnum):
    PLAN = "plan"
    APPLY = "apply"
    DESTROY = "destroy"
    DRIFT = "drift"  # plan -refresh-only: does the infrastructure still match the state?


class DriftStatus(StrEnum):
    UNKNOWN = "unknown"  # never checked
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    CHECK_FAILED = "check_failed"


class ScheduleKind(StrEnum):
    DRIFT = "drift"
    PLAN = "plan"
    APPLY = "apply"


class NotifyEvent(StrEnum):
    RUN_CREATED = "run.created"
    AWAITING_APPROVAL = "run.awaiting_approval"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELED = "run.canceled"
    DRIFT_DETECTED = "drift.detected"
    DRIFT_CHECK_FAILED = "drift.check_failed"
    TEST = "test"  # the "send test" action; no destination subscribes to it


class DestinationKind(StrEnum):
    WEBHOOK = "webhook"  # JSON, signed with the destination's secret
    SLACK = "slack"  # a Slack-compatible incoming webhook: a readable message


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; kept with its attempts


class ApprovePolicy(StrEnum):
    """When an apply or destroy goes on from its plan without a person's approval."""

    NEVER = "never"
    ALWAYS = "always"
    NO_DESTROY = "no-destroy"  # only when the plan deletes and replaces nothing


class Tool(StrEnum):
    TERRAFORM = "terraform"
    TOFU = "tofu"


class RunnerStatus(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


class VariableCategory(StrEnum):
    TERRAFORM = "terraform"
    ENV = "env"


class CancelMode(StrEnum):
    GRACEFUL = "graceful"
    FORCE = "force"


# Named constraints, so Alembic's batch mode on SQLite can find and alter them later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        dict[str, str]: JSON(),
        bytes: LargeBinary(),
    }


class Runner(Base):
    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the runner's name
    address: Mapped[str] = mapped_column(String(255))
    token_encrypted: Mapped[bytes | None]
    tls_ca_pem: Mapped[str | None] = mapped_column(Text)
    tls_cert_pem: Mapped[str | None] = mapped_column(Text)
    tls_key_encrypted: Mapped[bytes | None]
    labels: Mapped[dict[str, str]] = mapped_column(default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the last GetInfo answer
    status: Mapped[str] = mapped_column(String(16), default=RunnerStatus.UNKNOWN.value)
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Ids that name something a user or a credential refers to are never handed out twice, on
# SQLite either (AUTOINCREMENT; PostgreSQL's sequences never go back).
NEVER_REUSED = {"sqlite_autoincrement": True}


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tool: Mapped[str] = mapped_column(String(16))
    required_labels: Mapped[dict[str, str]] = mapped_column(default=dict)
    # The deployment's own labels (team=payments): what token scopes match, not routing.
    labels: Mapped[dict[str, str]] = mapped_column(default=dict, server_default="{}")
    default_priority: Mapped[int] = mapped_column(default=0)
    version_constraint: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when deleted: the deployment and everything it owns are kept (hidden) until the
    # retention period ends and a purge removes them, or it is restored.
    deleted_at: Mapped[datetime | None]
    # The approval policy of runs that set none, and whether the approver of a run must be
    # another token than the one that created it.
    auto_approve: Mapped[str] = mapped_column(
        String(16), default=ApprovePolicy.NEVER.value, server_default=ApprovePolicy.NEVER.value
    )
    require_other_approver: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # The last drift check's verdict (DriftStatus), when it ended and its run.
    drift_status: Mapped[str] = mapped_column(
        String(16), default=DriftStatus.UNKNOWN.value, server_default=DriftStatus.UNKNOWN.value
    )
    drift_checked_at: Mapped[datetime | None]
    drift_run_id: Mapped[int | None]


class ConfigVersion(Base):
    __tablename__ = "config_versions"
    __table_args__ = (UniqueConstraint("deployment_id", "version"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    version: Mapped[int]
    archive: Mapped[bytes]  # always a normalised tar.gz
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Variable(Base):
    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("deployment_id", "key", "category"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str | None] = mapped_column(Text)  # plaintext, only when not sensitive
    value_encrypted: Mapped[bytes | None]
    category: Mapped[str] = mapped_column(String(16))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)


class RetiredSecret(Base):
    """A value a sensitive variable held before it was changed or deleted: terraform's state
    and plans may still print it, so it is masked in every run's output forever."""

    __tablename__ = "retired_secrets"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    value_encrypted: Mapped[bytes]
    retired_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_queue", "status", "priority", "created_at"),
        Index("ix_runs_deployment_status", "deployment_id", "status"),
        Index("ix_runs_runner_run_id", "runner_run_id"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    config_version_id: Mapped[int] = mapped_column(
        ForeignKey("config_versions.id", ondelete="CASCADE")
    )
    operation: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(default=0)
    approve_policy: Mapped[str] = mapped_column(
        String(16), default=ApprovePolicy.NEVER.value, server_default=ApprovePolicy.NEVER.value
    )
    created_by: Mapped[str | None] = mapped_column(String(128))  # the API token's name
    created_by_token: Mapped[int | None]  # its id: names are not unique (four eyes)
    plan_file: Mapped[bytes | None]
    # Not a foreign key: a run's history keeps naming its runner after the runner is removed.
    runner_id: Mapped[str | None] = mapped_column(String(64))
    tool_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    error_msg: Mapped[str] = mapped_column(Text, default="")
    wait_reason: Mapped[str] = mapped_column(Text, default="")
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[str | None] = mapped_column(String(16))
    dispatch_count: Mapped[int] = mapped_column(default=0)
    # Bumped by every claim and adoption; every write of an execution checks it (fencing).
    epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    # The runner-side run of the step in flight ("<db>-r<id>-<phase>-<attempt>-<step>", <db>
    # derived from this database's secret, so backends on different databases never collide
    # on a shared runner), where its seq 1 lands in this run's log, and the executing
    # backend's last sign of life: enough for a restarted (or another) backend to re-attach
    # without losing or doubling a line.
    runner_run_id: Mapped[str | None] = mapped_column(String(160))
    step_seq_offset: Mapped[int] = mapped_column(default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None]
    has_changes: Mapped[bool | None] = mapped_column(Boolean)
    # The plan as a reviewer reads it (backend.plans, redacted, then sealed), its counts,
    # the saved plan's SHA-256 (the apply checks it on the runner), when the plan ended and
    # the deployment's newest state version then (an approval after the state moved on is
    # refused).
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    plan_summary: Mapped[bytes | None]
    plan_sha256: Mapped[str | None] = mapped_column(String(64))
    planned_at: Mapped[datetime | None]
    plan_state_version: Mapped[int | None]
    # The schedule that queued the run (not a foreign key: the run outlives its schedule).
    schedule_id: Mapped[int | None] = mapped_column(index=True)


class BackendSetting(Base):
    """Values the backend makes for itself once, shared by every replica through the
    database (the prefix of runner-side run ids). Never key material."""

    __tablename__ = "backend_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class RunEvent(Base):
    __tablename__ = "run_events"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    # Who: an API token's name, or "system" (the platform itself).
    actor: Mapped[str] = mapped_column(String(128), default="system", server_default="system")
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")


class LogChunk(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_run_seq", "run_id", "first_seq"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    first_seq: Mapped[int]
    last_seq: Mapped[int]
    data: Mapped[str] = mapped_column(Text)  # the chunk's lines joined with '\n'


class StateVersion(Base):
    __tablename__ = "state_versions"
    __table_args__ = (Index("ix_state_versions_deployment", "deployment_id", "id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    serial: Mapped[int]
    lineage: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes]  # empty for the marker a DELETE leaves
    md5: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Saved from terraform's errored.tfstate: state it could not write itself.
    recovered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class StateLock(Base):
    __tablename__ = "state_locks"

    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    lock_id: Mapped[str] = mapped_column(String(255))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # terraform's lock info JSON
    run_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # backend.access: one of viewer, planner, operator, admin; the scope ({"names":
    # [patterns], "labels": {k: v}}) limits it to some deployments (None: every one).
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON())


class AuditEntry(Base):
    """One entry of the audit log: append-only, each entry holding the hash of the one
    before it (backend.store.audit), so an edit or a removal shows."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[int | None]  # not a foreign key: the entry outlives the token
    actor: Mapped[str] = mapped_column(String(128))  # the token's name, or "anonymous"
    source: Mapped[str] = mapped_column(String(64), default="")  # the client's address
    action: Mapped[str] = mapped_column(String(160))  # "POST /runs/{run_id}/approve"
    target: Mapped[str] = mapped_column(String(255), default="")  # "run_id=12"
    result: Mapped[str] = mapped_column(Text, default="")  # "200", "403: ..."
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


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
