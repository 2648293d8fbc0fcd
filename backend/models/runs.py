"""Runs, their history and their log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import NEVER_REUSED, Base, utcnow
from backend.models.vocab import ApprovePolicy, RunStatus


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_deployment_status", "deployment_id", "status"),
        Index("ix_runs_runner_run_id", "runner_run_id"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    config_version_id: Mapped[int] = mapped_column(
        ForeignKey("config_versions.id", ondelete="CASCADE")
    )
    operation: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(default=0)
    approve_policy: Mapped[str] = mapped_column(
        String(16), default=ApprovePolicy.NEVER.value, server_default=ApprovePolicy.NEVER.value
    )
    created_by: Mapped[str | None] = mapped_column(String(128))  # the API token's name
    created_by_token: Mapped[int | None]  # its id: names are not unique (four eyes)
    plan_file: Mapped[bytes | None]
    # Not a foreign key: a run's history keeps naming its runner after the runner is removed.
    runner_id: Mapped[str | None] = mapped_column(String(64))
    tool_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    error_msg: Mapped[str] = mapped_column(Text, default="")
    wait_reason: Mapped[str] = mapped_column(Text, default="")
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[str | None] = mapped_column(String(16))
    dispatch_count: Mapped[int] = mapped_column(default=0)
    # Bumped by every claim and adoption; every write of an execution checks it (fencing).
    epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    # The runner-side run of the step in flight ("<db>-r<id>-<phase>-<attempt>-<step>", <db>
    # derived from this database's secret, so backends on different databases never collide
    # on a shared runner), where its seq 1 lands in this run's log, and the executing
    # backend's last sign of life: enough for a restarted (or another) backend to re-attach
    # without losing or doubling a line.
    runner_run_id: Mapped[str | None] = mapped_column(String(160))
    step_seq_offset: Mapped[int] = mapped_column(default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None]
    has_changes: Mapped[bool | None] = mapped_column(Boolean)
    # The plan as a reviewer reads it (backend.plans, redacted, then sealed), its counts,
    # the saved plan's SHA-256 (the apply checks it on the runner), when the plan ended and
    # the deployment's newest state version then (an approval after the state moved on is
    # refused).
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    plan_summary: Mapped[bytes | None]
    plan_sha256: Mapped[str | None] = mapped_column(String(64))
    planned_at: Mapped[datetime | None]
    plan_state_version: Mapped[int | None]
    # The schedule that queued the run (not a foreign key: the run outlives its schedule).
    schedule_id: Mapped[int | None] = mapped_column(index=True)


# The queue in the order the dispatcher reads it (highest priority, then oldest) for each
# status: a pass reads its first rows, or those after a given run, with no sort of the
# queue (`backend.store.queue`); the second, the runs of a status nobody looked at yet.
Index("ix_runs_queue", Run.status, Run.priority.desc(), Run.id)
Index("ix_runs_new", Run.status, Run.wait_reason, Run.priority.desc(), Run.id)


class RunEvent(Base):
    __tablename__ = "run_events"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    # Who: an API token's name, or "system" (the platform itself).
    actor: Mapped[str] = mapped_column(String(128), default="system", server_default="system")
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")


class LogChunk(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_run_seq", "run_id", "first_seq"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    first_seq: Mapped[int]
    last_seq: Mapped[int]
    data: Mapped[str] = mapped_column(Text)  # the chunk's lines joined with '\n'
