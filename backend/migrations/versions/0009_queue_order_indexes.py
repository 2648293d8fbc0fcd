"""The queue in dispatch order: ``ix_runs_queue`` becomes ``runs (status, priority DESC,
id)`` (it was ``(status, priority, created_at)``, an order no query reads in), and
``ix_runs_new`` is ``runs (status, wait_reason, priority DESC, id)``: a dispatch pass reads
the first runs of a status in queue order, or those after a run, or those with no wait
reason yet, without sorting the queue.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_runs_queue", table_name="runs")
    op.create_index("ix_runs_queue", "runs", ["status", sa.text("priority DESC"), "id"])
    op.create_index(
        "ix_runs_new", "runs", ["status", "wait_reason", sa.text("priority DESC"), "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_runs_new", table_name="runs")
    op.drop_index("ix_runs_queue", table_name="runs")
    op.create_index("ix_runs_queue", "runs", ["status", "priority", "created_at"])
