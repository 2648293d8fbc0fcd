"""The queue in dispatch order: partial indexes ``ix_runs_waiting`` and ``ix_runs_new`` on
``runs (priority DESC, id)`` holding only the runs that wait, so a dispatch pass reads the
first rows of the queue (or those after a run) without sorting it.

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

# As in backend.models.runs (a migration does not import the models it outlives).
WAITING_SQL = "status IN ('queued', 'applying') AND claimed_by IS NULL"
INDEXES = {"ix_runs_waiting": WAITING_SQL, "ix_runs_new": WAITING_SQL + " AND wait_reason = ''"}


def upgrade() -> None:
    for name, where in INDEXES.items():
        op.create_index(
            name,
            "runs",
            [sa.text("priority DESC"), "id"],
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="runs")
