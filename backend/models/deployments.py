"""Deployments and what they own: configuration versions, variables, retired secrets,
state versions and the state lock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import NEVER_REUSED, Base, utcnow
from backend.models.vocab import ApprovePolicy, DriftStatus


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
