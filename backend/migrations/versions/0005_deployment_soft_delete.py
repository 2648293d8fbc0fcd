"""Deleted deployments are kept until purged: ``deployments.deleted_at``.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Deployments deleted but not yet purged would come back as live ones: purge them.
    op.execute(sa.text("DELETE FROM deployments WHERE deleted_at IS NOT NULL"))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite (3.35+) drops a column in place. Batch mode would rebuild the table and
        # DROP the old one, which with foreign keys on deletes every row referring to it.
        op.execute(sa.text("ALTER TABLE deployments DROP COLUMN deleted_at"))
    else:
        op.drop_column("deployments", "deleted_at")
