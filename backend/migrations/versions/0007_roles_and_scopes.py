"""Roles and scopes: ``api_tokens.role`` (existing tokens become ``admin``: they could do
everything before), ``api_tokens.scope``, and ``deployments.labels`` that scopes match;
the hash-chained ``audit_log``.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _drop(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): no table rebuilt, so no cascading DROP.
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    else:
        op.drop_column(table, column)


def upgrade() -> None:
    op.add_column(
        "api_tokens", sa.Column("role", sa.String(16), nullable=False, server_default="admin")
    )
    op.add_column("api_tokens", sa.Column("scope", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("created_by_token", sa.Integer(), nullable=True))
    op.add_column(
        "deployments", sa.Column("labels", sa.JSON(), nullable=False, server_default="{}")
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("action", sa.String(160), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
    _drop("api_tokens", "role")
    _drop("api_tokens", "scope")
    _drop("runs", "created_by_token")
    _drop("deployments", "labels")
