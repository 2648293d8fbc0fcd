"""The database schema: SQLAlchemy 2.0 typed declarative models and the status vocabularies,
one module per concern; every name is importable from ``backend.models``.

Alembic migrations under ``backend/migrations`` create exactly these tables; a test
compares the migrated schema with these modules on SQLite and PostgreSQL.
"""

from backend.models.automation import (
    DeliveryAttempt,
    DriftCheck,
    NotificationDelivery,
    NotificationDestination,
    NotificationEvent,
    Schedule,
)
from backend.models.base import NAMING_CONVENTION, NEVER_REUSED, Base, UTCDateTime, utcnow
from backend.models.deployments import (
    ConfigVersion,
    Deployment,
    RetiredSecret,
    StateLock,
    StateVersion,
    Variable,
)
from backend.models.platform import ApiToken, AuditEntry, BackendSetting, Runner
from backend.models.runs import LogChunk, Run, RunEvent
from backend.models.vocab import (
    ACTIVE_STATUSES,
    STATE_ACCESS_STATUSES,
    TERMINAL_STATUSES,
    ApprovePolicy,
    CancelMode,
    DeliveryStatus,
    DestinationKind,
    DriftStatus,
    NotifyEvent,
    Operation,
    RunnerStatus,
    RunStatus,
    ScheduleKind,
    Tool,
    VariableCategory,
)

__all__ = [
    "ACTIVE_STATUSES",
    "ApiToken",
    "ApprovePolicy",
    "AuditEntry",
    "BackendSetting",
    "Base",
    "CancelMode",
    "ConfigVersion",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Deployment",
    "DestinationKind",
    "DriftCheck",
    "DriftStatus",
    "LogChunk",
    "NAMING_CONVENTION",
    "NEVER_REUSED",
    "NotificationDelivery",
    "NotificationDestination",
    "NotificationEvent",
    "NotifyEvent",
    "Operation",
    "RetiredSecret",
    "Run",
    "RunEvent",
    "RunStatus",
    "Runner",
    "RunnerStatus",
    "STATE_ACCESS_STATUSES",
    "Schedule",
    "ScheduleKind",
    "StateLock",
    "StateVersion",
    "TERMINAL_STATUSES",
    "Tool",
    "UTCDateTime",
    "Variable",
    "VariableCategory",
    "utcnow",
]
