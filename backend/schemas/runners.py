"""The runner pool: registering a runner and what the API says of one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
