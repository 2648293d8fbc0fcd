"""Deployments, their configuration versions and variables."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.schemas.common import POLICIES, ApprovePolicyName


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
