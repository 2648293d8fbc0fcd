"""API tokens: creating one (role, scope, expiry) and what the API says of one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
