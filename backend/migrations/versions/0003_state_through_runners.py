"""Terraform's state reaches the backend through its runner: per-run state credentials and
the key they were derived from are gone. Runner-side run ids keep their prefix (now a plain
setting), state versions say whether they were recovered from an errored.tfstate, and runs
are found by the runner-side id of their current step.

Revision ID: 0003
Revises: 0002
"""

import base64
import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    settings = op.create_table(
        "backend_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_backend_settings")),
    )
    # Runs in flight keep their runner-side names: the prefix was derived from the key.
    key = (
        op.get_bind()
        .execute(sa.text("SELECT value FROM backend_secrets WHERE name = 'state_token_key'"))
        .scalar()
    )
    if key is not None:
        secret = base64.urlsafe_b64decode(key)
        prefix = "b" + hashlib.sha256(b"runner-run-ids:" + secret).hexdigest()[:10]
        op.bulk_insert(settings, [{"name": "runner_run_prefix", "value": prefix}])
    op.drop_table("backend_secrets")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("state_token_hash")
        batch.create_index("ix_runs_runner_run_id", ["runner_run_id"])
    with op.batch_alter_table("state_versions") as batch:
        batch.add_column(
            sa.Column("recovered", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("state_versions") as batch:
        batch.drop_column("recovered")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_runner_run_id")
        batch.add_column(sa.Column("state_token_hash", sa.String(length=64), nullable=True))
    op.create_table(
        "backend_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_backend_secrets")),
    )
    op.drop_table("backend_settings")
