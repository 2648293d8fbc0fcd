"""Ids are never handed out twice (SQLite AUTOINCREMENT: a run, a log, a token or a state
version deleted at the top of its table used to leave its id to the next one); a
sensitive variable's past values are kept, encrypted, to be masked forever; a run's claim
has an epoch that fences its execution's writes; the queue finds a deployment's runs by
status; the never-used `plan_run_id` is gone.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "deployments",
    "config_versions",
    "variables",
    "runs",
    "run_events",
    "log_chunks",
    "state_versions",
    "api_tokens",
)


def upgrade() -> None:
    op.create_table(
        "retired_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("value_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_retired_secrets_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retired_secrets")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_retired_secrets_deployment_id"), "retired_secrets", ["deployment_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("fk_runs_plan_run_id_runs", type_="foreignkey")
        batch.drop_column("plan_run_id")
        batch.drop_index("ix_runs_deployment_id")
        batch.create_index("ix_runs_deployment_status", ["deployment_id", "status"])
    if op.get_bind().dialect.name == "sqlite":
        # AUTOINCREMENT is part of a table's definition on SQLite: rebuild each table
        # (rows copied; backend.db.migrate turns foreign keys off meanwhile).
        for table in TABLES:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_deployment_status")
        batch.create_index("ix_runs_deployment_id", ["deployment_id"])
        batch.add_column(sa.Column("plan_run_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_runs_plan_run_id_runs", "runs", ["plan_run_id"], ["id"], ondelete="SET NULL"
        )
        batch.drop_column("epoch")
    op.drop_index(op.f("ix_retired_secrets_deployment_id"), table_name="retired_secrets")
    op.drop_table("retired_secrets")
