"""Plan review: a run's plan summary (sealed), counts, digest and the state version it was
made from; the approval policy (never, always, no-destroy) per run and per deployment;
who did what in a run's history.

``runs.auto_approve`` (a boolean) becomes ``runs.approve_policy``: true is ``always``.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _drop(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): batch mode would rebuild the table, and with foreign keys
        # on, dropping the old copy deletes every row referring to it.
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    else:
        op.drop_column(table, column)


def upgrade() -> None:
    # Plain ADD COLUMNs (in place on SQLite too): no table is rebuilt.
    add = op.add_column
    add("runs", sa.Column("approve_policy", sa.String(16), nullable=False, server_default="never"))
    add("runs", sa.Column("created_by", sa.String(128), nullable=True))
    add("runs", sa.Column("changes", sa.JSON(), nullable=True))
    add("runs", sa.Column("plan_summary", sa.LargeBinary(), nullable=True))
    add("runs", sa.Column("plan_sha256", sa.String(64), nullable=True))
    add("runs", sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True))
    add("runs", sa.Column("plan_state_version", sa.Integer(), nullable=True))
    op.execute(sa.text("UPDATE runs SET approve_policy = 'always' WHERE auto_approve"))
    _drop("runs", "auto_approve")
    add("run_events", sa.Column("actor", sa.String(128), nullable=False, server_default="system"))
    add("run_events", sa.Column("comment", sa.Text(), nullable=False, server_default=""))
    add(
        "deployments",
        sa.Column("auto_approve", sa.String(16), nullable=False, server_default="never"),
    )
    add(
        "deployments",
        sa.Column(
            "require_other_approver", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )


def downgrade() -> None:
    op.add_column(
        "runs", sa.Column("auto_approve", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.execute(sa.text("UPDATE runs SET auto_approve = (approve_policy = 'always')"))
    # A discarded run reads as canceled to the older schema, which has no such status.
    op.execute(sa.text("UPDATE runs SET status = 'canceled' WHERE status = 'discarded'"))
    for column in (
        "approve_policy", "created_by", "changes", "plan_summary", "plan_sha256", "planned_at",
        "plan_state_version",
    ):  # fmt: skip
        _drop("runs", column)
    _drop("run_events", "actor")
    _drop("run_events", "comment")
    _drop("deployments", "auto_approve")
    _drop("deployments", "require_other_approver")
