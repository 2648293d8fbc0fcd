"""The status vocabularies: what a run, a runner, a drift check or a delivery can be."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    APPLYING = "applying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    DISCARDED = "discarded"  # a plan awaiting approval that a person decided not to apply


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELED,
        RunStatus.TIMED_OUT,
        RunStatus.DISCARDED,
    }
)


# A run in any other status still holds its deployment (queued, executing or waiting for
# approval), so the deployment cannot be deleted under it.
ACTIVE_STATUSES = frozenset(set(RunStatus) - TERMINAL_STATUSES)


# Statuses in which a run's terraform is executing and may talk to the state endpoint.
STATE_ACCESS_STATUSES = frozenset({RunStatus.RUNNING, RunStatus.APPLYING})


class Operation(StrEnum):
    PLAN = "plan"
    APPLY = "apply"
    DESTROY = "destroy"
    DRIFT = "drift"  # plan -refresh-only: does the infrastructure still match the state?


class DriftStatus(StrEnum):
    UNKNOWN = "unknown"  # never checked
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    CHECK_FAILED = "check_failed"


class ScheduleKind(StrEnum):
    DRIFT = "drift"
    PLAN = "plan"
    APPLY = "apply"


class NotifyEvent(StrEnum):
    RUN_CREATED = "run.created"
    AWAITING_APPROVAL = "run.awaiting_approval"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELED = "run.canceled"
    DRIFT_DETECTED = "drift.detected"
    DRIFT_CHECK_FAILED = "drift.check_failed"
    TEST = "test"  # the "send test" action; no destination subscribes to it


class DestinationKind(StrEnum):
    WEBHOOK = "webhook"  # JSON, signed with the destination's secret
    SLACK = "slack"  # a Slack-compatible incoming webhook: a readable message


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; kept with its attempts


class ApprovePolicy(StrEnum):
    """When an apply or destroy goes on from its plan without a person's approval."""

    NEVER = "never"
    ALWAYS = "always"
    NO_DESTROY = "no-destroy"  # only when the plan deletes and replaces nothing


class Tool(StrEnum):
    TERRAFORM = "terraform"
    TOFU = "tofu"


class RunnerStatus(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


class VariableCategory(StrEnum):
    TERRAFORM = "terraform"
    ENV = "env"


class CancelMode(StrEnum):
    GRACEFUL = "graceful"
    FORCE = "force"
