"""Pydantic v2 request and response bodies of the REST API.

Requests check shape and types; the domain functions check the rules (names, labels,
archive contents) so the same rules hold for every caller, not only the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.store.validation import MAX_ID

ApprovePolicyName = Literal["never", "always", "no-destroy"]
POLICIES = (
    "never: a person approves; always: no approval; no-destroy: no approval when the plan "
    "deletes and replaces nothing."
)


class RunnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique runner name, e.g. 'aws-1'.", max_length=64)
    address: str = Field(description="gRPC address host:port.", max_length=255)
    token: str | None = Field(default=None, description="Bearer token the runner expects.")
    tls_ca_pem: str | None = Field(default=None, description="CA certificate (PEM) for TLS.")
    tls_cert_pem: str | None = Field(default=None, description="Client certificate for mTLS.")
    tls_key_pem: str | None = Field(default=None, description="Client key (PEM) for mTLS.")
    labels: dict[str, str] = Field(default_factory=dict, description="e.g. {'provider': 'aws'}")


class EffectiveLabel(BaseModel):
    key: str
    value: str
    source: Literal["registered", "reported", "both"] = Field(
        description="Given at registration, reported by the runner (its --label), or both."
    )
    registered_value: str | None = Field(
        default=None,
        description="The registered value the runner's reported one replaces, if they differ.",
    )


class RunnerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    address: str
    labels: dict[str, str] = Field(description="The labels given at registration.")
    effective_labels: list[EffectiveLabel] = Field(
        description="The labels routing matches on: the registered ones merged with those the "
        "runner reports (a reported value wins), each with where it came from."
    )
    status: str = Field(description="unknown, healthy, unhealthy or draining")
    info: dict[str, Any] = Field(description="The runner's last GetInfo answer.")
    has_token: bool
    tls: bool
    last_seen: datetime | None
    created_at: datetime


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="Unique name, used in URLs.")
    tool: Literal["terraform", "tofu"] = "terraform"
    required_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a runner must have, e.g. {'provider': 'aws'}."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="The deployment's own labels, e.g. {'team': 'payments'}: what token "
        "scopes match (runner routing uses required_labels).",
    )
    default_priority: int = Field(default=0, description="Priority of runs that set none.")
    version_constraint: str | None = Field(
        default=None, description="Tool version constraint, e.g. '>= 1.5'."
    )
    auto_approve: ApprovePolicyName = Field(
        default="never", description="The approval policy of runs that set none. " + POLICIES
    )
    require_other_approver: bool = Field(
        default=False, description="An approver must be another token than the run's creator."
    )


class DeploymentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] | None = Field(
        default=None, description="The deployment's own labels (replaced whole)."
    )
    default_priority: int | None = Field(
        default=None, description="Priority of runs that set none."
    )
    auto_approve: ApprovePolicyName | None = Field(
        default=None, description="The approval policy of runs that set none. " + POLICIES
    )
    require_other_approver: bool | None = Field(
        default=None, description="An approver must be another token than the run's creator."
    )


class ConfigVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    sha256: str
    size: int
    created_at: datetime


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    tool: str
    required_labels: dict[str, str]
    labels: dict[str, str]
    default_priority: int
    version_constraint: str | None
    auto_approve: str
    require_other_approver: bool
    created_at: datetime
    deleted_at: datetime | None = Field(
        default=None, description="When it was deleted (deleted deployments only)."
    )
    purge_after: datetime | None = Field(
        default=None,
        description="When a deleted deployment is purged for good (IAC_DELETED_RETENTION_DAYS).",
    )
    managed_resources: int | None = Field(
        default=None,
        description="Resource instances in its latest state version (GET of one deployment).",
    )
    drift_status: str = Field(
        default="unknown", description="in_sync, drifted, check_failed or unknown (never checked)."
    )
    drift_checked_at: datetime | None = None


class VariableSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="The value; stored encrypted when sensitive.")
    sensitive: bool = Field(default=False, description="Encrypt at rest, never return, mask.")
    category: Literal["terraform", "env"] = Field(
        default="terraform", description="'terraform' (TF_VAR_<key>) or 'env'."
    )


class VariableOut(BaseModel):
    key: str
    category: str
    sensitive: bool
    value: str | None = Field(description="Null for sensitive variables.")


class StateVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    serial: int
    lineage: str
    md5: str
    run_id: int | None
    created_at: datetime
    deleted: bool = Field(default=False, description="A DELETE marker, not a state.")
    recovered: bool = Field(
        default=False,
        description="State terraform could not save (its errored.tfstate), kept by the backend.",
    )


class StateLockOut(BaseModel):
    lock_id: str
    run_id: int | None
    runner_id: str | None
    created_at: datetime
    info: dict[str, Any]


class StateOut(BaseModel):
    lock: StateLockOut | None
    versions: list[StateVersionOut]


class OutputOut(BaseModel):
    name: str
    value: Any = Field(description="'(sensitive value)' for a sensitive output.")
    type: Any
    sensitive: bool


class ResourceOut(BaseModel):
    address: str
    mode: str = Field(description="managed or data")
    type: str
    name: str
    module: str | None
    provider: str


class Message(BaseModel):
    detail: str


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(description="Name of the deployment to run.")
    operation: Literal["plan", "apply", "destroy", "drift"] = Field(
        description="plan: plan only; apply/destroy: plan, approval, then apply that plan; "
        "drift: a refresh-only plan that sets the deployment's drift status."
    )
    priority: int | None = Field(
        default=None, description="Higher runs first; default: the deployment's default priority."
    )
    auto_approve: ApprovePolicyName | bool | None = Field(
        default=None,
        description="When the apply goes on without approval; default: the deployment's. "
        + POLICIES
        + " true and false are always and never.",
    )
    comment: str = Field(default="", max_length=2000, description="Kept in the run's history.")
    config_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="Configuration version to use; default: the latest.",
    )


class RunEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    kind: str
    message: str
    actor: str = Field(description="Who: an API token's name, or 'system'.")
    comment: str


class RunOut(BaseModel):
    id: int
    deployment: str
    operation: str
    status: str
    priority: int
    auto_approve: str = Field(description="The run's approval policy: never, always, no-destroy.")
    created_by: str | None = Field(description="The API token that created it.")
    config_version: int
    runner_id: str | None
    tool_version: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    error_msg: str
    wait_reason: str = Field(description="Why a queued run has not started yet.")
    has_changes: bool | None
    changes: dict[str, int] | None = Field(
        default=None,
        description="The plan's counts: add, change, destroy, replace, read, import, move.",
    )
    plan_sha256: str | None = Field(
        default=None, description="SHA-256 of the saved plan; the apply checks it on the runner."
    )
    planned_at: datetime | None = None
    last_seq: int = Field(description="Seq of the last stored log line.")
    cancel_requested: str | None
    running_seconds: float = Field(
        default=0.0,
        description="Seconds a runner executed it (plan and apply phases), up to now if it "
        "has not ended.",
    )
    waiting_seconds: float = Field(
        default=0.0,
        description="Seconds it waited: queued (for a runner, or behind another run) and "
        "awaiting approval, up to now if it has not ended.",
    )
    events: list[RunEventOut] | None = Field(
        default=None, description="The run's history (on GET /runs/{id})."
    )


class PlanCounts(BaseModel):
    add: int
    change: int
    destroy: int
    replace: int
    read: int
    import_: int = Field(alias="import")
    move: int


class ResourceChangeOut(BaseModel):
    address: str
    module: str | None
    type: str
    name: str
    action: str = Field(description="create, update, delete, replace or read.")
    reason: str | None = Field(description="terraform's action_reason, e.g. replace_by_triggers.")
    changed: list[str] = Field(description="Attribute paths whose value changes.")
    forces_replacement: list[str] = Field(description="Attribute paths that force replacement.")
    before: Any = Field(description="Redacted: '(sensitive value)' where anything is secret.")
    after: Any = Field(description="Redacted; '(known after apply)' where not yet known.")
    imported: bool
    moved_from: str | None


class OutputChangeOut(BaseModel):
    name: str
    action: str
    before: Any
    after: Any
    sensitive: bool


class PlanOut(BaseModel):
    counts: PlanCounts
    resource_changes: list[ResourceChangeOut] = Field(
        description="Replacements, then deletions, updates, creations, reads."
    )
    output_changes: list[OutputChangeOut]
    resource_drift: list[ResourceChangeOut] = Field(
        description="Changes made outside terraform, found while refreshing."
    )
    errored: bool


class Decision(BaseModel):
    """The body of approve, discard and cancel (optional)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000, description="Kept in the run's history.")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        description="What the token is for, e.g. 'ci' ('system' and 'anonymous' are the "
        "audit log's own actors).",
    )
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, description="Days until it expires; none: never."
    )
    role: Literal["viewer", "planner", "operator", "admin"] = Field(
        default="viewer",
        description="viewer < planner < operator < admin; at most the creating token's.",
    )
    scope: ScopeIn | None = Field(
        default=None,
        description="Limit it to some deployments; within the creating token's scope. None: "
        "the creating token's scope.",
    )

    @field_validator("name")
    @classmethod
    def _not_an_audit_actor(cls, name: str) -> str:
        if name in ("system", "anonymous"):
            raise ValueError(f"{name!r} is the audit log's own actor: choose another name")
        return name


class ScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Deployment name patterns (fnmatch, e.g. 'payments-*'); empty: any name.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Deployment labels it must have, e.g. {'team': 'a'}."
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    scope: dict[str, Any] | None = Field(
        description="{names, labels}: the deployments it may see; null: every one."
    )
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class MeOut(TokenOut):
    may: dict[str, bool] = Field(description="Each role: whether this token has what it may do.")
    scope_text: str = Field(description="The scope in words.")


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, only its hash is kept.")


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    token_id: int | None
    actor: str = Field(description="The token's name, 'anonymous' or 'system'.")
    source: str = Field(description="The client's address.")
    action: str = Field(description="e.g. 'POST /runs/{run_id}/approve'.")
    target: str = Field(description="The path's values and query, e.g. 'run_id=12'.")
    result: str = Field(description="The HTTP status, and the reason of a refusal.")
    prev_hash: str
    hash: str


class AuditVerdict(BaseModel):
    entries: int
    ok: bool
    broken_at: int | None = Field(description="The first entry that does not hold.")
    reason: str
    head_id: int = Field(description="The newest entry's id (when the chain holds).")
    head: str = Field(
        description="The newest entry's hash: keep it elsewhere to detect a chain cut short "
        "or rewritten whole."
    )


class DriftCheckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run_id: int
    status: str
    checked_at: datetime
    detail: dict[str, Any] = Field(
        description="resources (address, action) and outputs that drifted, or the reason a "
        "check failed; never a value."
    )


class DriftOut(BaseModel):
    deployment: str
    status: str = Field(description="in_sync, drifted, check_failed or unknown (never checked).")
    checked_at: datetime | None
    run_id: int | None = Field(description="The drift check that gave the status.")
    detail: dict[str, Any] = Field(default_factory=dict)
    history: list[DriftCheckOut] | None = Field(
        default=None, description="The recent checks, newest first (one deployment's view)."
    )
