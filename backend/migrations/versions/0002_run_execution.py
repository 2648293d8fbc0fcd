"""Run execution bookkeeping: the runner-side run of the current step, its seq offset in the
run's log, the executing backend's heartbeat, whether the plan has changes; and the
backend's own secrets (the key that derives per-run state credentials).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backend_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_backend_secrets")),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("runner_run_id", sa.String(length=160), nullable=True))
        batch.add_column(
            sa.Column("step_seq_offset", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("has_changes", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("has_changes")
        batch.drop_column("heartbeat_at")
        batch.drop_column("step_seq_offset")
        batch.drop_column("runner_run_id")
    op.drop_table("backend_secrets")
