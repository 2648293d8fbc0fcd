"""Schedules, drift detection and notifications: ``schedules``; ``runs.schedule_id``;
a deployment's drift status and ``drift_checks``, its history; the notification outbox
(``notification_events``), its destinations, deliveries and their attempts.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def _drop(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    else:
        op.drop_column(table, column)


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column("drift_status", sa.String(16), nullable=False, server_default="unknown"),
    )
    op.add_column("deployments", sa.Column("drift_checked_at", WHEN, nullable=True))
    op.add_column("deployments", sa.Column("drift_run_id", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("schedule_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_runs_schedule_id"), "runs", ["schedule_id"])

    op.create_table(
        "schedules",
        _id(),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("auto_approve", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", WHEN, nullable=False),
        sa.Column("last_run_at", WHEN, nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("last_skipped", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_by_token", sa.Integer(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        _fk("schedules", "deployment_id", "deployments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_schedules_due", "schedules", ["enabled", "next_run_at"])
    op.create_index(op.f("ix_schedules_deployment_id"), "schedules", ["deployment_id"])

    op.create_table(
        "drift_checks",
        _id(),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checked_at", WHEN, nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        _fk("drift_checks", "deployment_id", "deployments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_checks")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_drift_checks_deployment", "drift_checks", ["deployment_id", "id"])

    op.create_table(
        "notification_destinations",
        _id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("url_host", sa.String(255), nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        _fk("notification_destinations", "deployment_id", "deployments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_destinations")),
        sa.UniqueConstraint("name", name=op.f("uq_notification_destinations_name")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_notification_destinations_deployment_id"),
        "notification_destinations",
        ["deployment_id"],
    )

    op.create_table(
        "notification_events",
        _id(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_events")),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "notification_deliveries",
        _id(),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", WHEN, nullable=True),
        sa.Column("delivered_at", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        _fk("notification_deliveries", "event_id", "notification_events"),
        _fk("notification_deliveries", "destination_id", "notification_destinations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "event_id",
            "destination_id",
            name=op.f("uq_notification_deliveries_event_id_destination_id"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_notification_deliveries_due", "notification_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        op.f("ix_notification_deliveries_destination_id"),
        "notification_deliveries",
        ["destination_id"],
    )

    op.create_table(
        "delivery_attempts",
        _id(),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("backend_id", sa.String(128), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        _fk("delivery_attempts", "delivery_id", "notification_deliveries"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_delivery_attempts_delivery_id"), "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    for table in (
        "delivery_attempts",
        "notification_deliveries",
        "notification_events",
        "notification_destinations",
        "drift_checks",
        "schedules",
    ):
        op.drop_table(table)
    op.drop_index(op.f("ix_runs_schedule_id"), "runs")
    _drop("runs", "schedule_id")
    for column in ("drift_status", "drift_checked_at", "drift_run_id"):
        _drop("deployments", column)
