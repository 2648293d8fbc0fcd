"""What the platform keeps of itself: runners, settings, API tokens, the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import NEVER_REUSED, Base, utcnow
from backend.models.vocab import RunnerStatus


class Runner(Base):
    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the runner's name
    address: Mapped[str] = mapped_column(String(255))
    token_encrypted: Mapped[bytes | None]
    tls_ca_pem: Mapped[str | None] = mapped_column(Text)
    tls_cert_pem: Mapped[str | None] = mapped_column(Text)
    tls_key_encrypted: Mapped[bytes | None]
    labels: Mapped[dict[str, str]] = mapped_column(default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the last GetInfo answer
    status: Mapped[str] = mapped_column(String(16), default=RunnerStatus.UNKNOWN.value)
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BackendSetting(Base):
    """Values the backend makes for itself once, shared by every replica through the
    database (the prefix of runner-side run ids). Never key material."""

    __tablename__ = "backend_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # backend.access: one of viewer, planner, operator, admin; the scope ({"names":
    # [patterns], "labels": {k: v}}) limits it to some deployments (None: every one).
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON())


class AuditEntry(Base):
    """One entry of the audit log: append-only, each entry holding the hash of the one
    before it (backend.store.audit), so an edit or a removal shows."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[int | None]  # not a foreign key: the entry outlives the token
    actor: Mapped[str] = mapped_column(String(128))  # the token's name, or "anonymous"
    source: Mapped[str] = mapped_column(String(64), default="")  # the client's address
    action: Mapped[str] = mapped_column(String(160))  # "POST /runs/{run_id}/approve"
    target: Mapped[str] = mapped_column(String(255), default="")  # "run_id=12"
    result: Mapped[str] = mapped_column(Text, default="")  # "200", "403: ..."
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
