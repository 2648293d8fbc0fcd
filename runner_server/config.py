"""The settings of `iac-runner-server` and of its `health` probe: pydantic-settings models.

Each field is one option: its description, default and rules are the documentation that
`iac-runner-server --help` prints (runner_server/flags.py makes the flags from them). The
command line wins over the IAC_RUNNER_* environment variable, which wins over the default.
Building a model checks every value and the rules between them, so a `ServerConfig` that
exists can serve.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import sys
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from runner_server.flags import Flag, env_name, flag_name, names, parse_bool
from runner_server.workspace import Limits
from runner_stdio.tools import OPERATIONS, ToolError, get_spec, parse_tool_entries

MiB = 1024 * 1024
# A token on a network: the backend refuses shorter API tokens the same way.
MIN_TOKEN_LENGTH = 16
# The backend's rules for labels (backend/store/validation.py): a label it could not
# store or match is refused here, where the operator sets it.
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:-]{0,128}$")
RUNNER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
# What a bearer token may hold: gRPC metadata values are printable ASCII, and the
# `Bearer TOKEN` header would not survive a space.
TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")
LIMITS = Limits()
# The longest duration a setting may have. iac-runner waits with poll(), whose timeout
# overflows at about 24 days (every run would then fail); a week is beyond any run.
WEEK = 7 * 24 * 3600
INT32_MAX = 2**31 - 1  # GetInfo reports max_concurrent as an int32


def _settings(env_prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=env_prefix,
        extra="ignore",
        # `KEY=` in an env file means "not set": the default applies.
        env_ignore_empty=True,
        validate_by_name=True,
        validate_by_alias=True,
        allow_inf_nan=False,
    )


def _items(value: object) -> object:
    """A variable's comma-separated text, or the repeated flag's values, as a list of items."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [item.strip() for text in value for item in text.split(",") if item.strip()]
    return value


def _host_port(value: str, *, any_port: bool, host_optional: bool = False) -> str:
    host, sep, port = value.rpartition(":")
    lowest = 0 if any_port else 1
    if (
        not sep
        or not (host or host_optional)
        or not port.isascii()
        or not port.isdigit()
        or not lowest <= int(port) <= 65535
    ):
        example = "127.0.0.1:9100" if host_optional else "127.0.0.1:50051"
        raise ValueError(
            f"{value!r} must be HOST:PORT with a port from {lowest} to 65535, e.g. {example}"
        )
    return value


def _existing_file(value: str) -> str:
    if value and not os.path.isfile(value):
        raise ValueError(f"file {value!r} does not exist")
    if value and not os.access(value, os.R_OK):
        raise ValueError(f"file {value!r} cannot be read")
    return value


class ServerConfig(BaseSettings):
    """iac-runner-server settings; each is a flag and an IAC_RUNNER_* environment variable."""

    model_config = _settings("IAC_RUNNER_")

    listen: Annotated[str, Flag(metavar="HOST:PORT")] = Field(
        default="127.0.0.1:50051",
        description="address to serve gRPC on; port 0 takes a free port",
    )
    workspace_root: Annotated[str, Flag(metavar="DIR")] = Field(
        default="/tmp/iac-deployments",
        description="runs execute in directories under this root (created when needed)",
    )
    max_concurrent: Annotated[int, Flag(metavar="N")] = Field(
        default=4, ge=1, le=INT32_MAX, description="runs at once; more get RESOURCE_EXHAUSTED"
    )
    labels: Annotated[dict[str, str], NoDecode, Flag("--label", "KEY=VALUE", merge_env=True)] = (
        Field(
            default_factory=dict,
            description="a label of this runner, repeatable, e.g. provider=aws; a --label wins "
            "over the same key in the variable",
        )
    )
    runner_id: Annotated[str, Flag(metavar="ID", default_text="the host name")] = Field(
        default="",
        validation_alias="IAC_RUNNER_ID",
        description="this runner's id, in GetInfo and the logs",
    )
    token: Annotated[str, Flag(metavar="TOKEN")] = Field(
        default="",
        repr=False,
        description="require gRPC metadata 'authorization: Bearer TOKEN' on every call but the "
        f"health check; at least {MIN_TOKEN_LENGTH} characters on a non-loopback address "
        "(make one with `openssl rand -hex 16`)",
    )
    tls_cert: Annotated[str, Flag(metavar="FILE")] = Field(
        default="", description="server certificate (PEM); serves TLS, with --tls-key"
    )
    tls_key: Annotated[str, Flag(metavar="FILE")] = Field(
        default="", description="server private key (PEM), with --tls-cert"
    )
    tls_client_ca: Annotated[str, Flag(metavar="FILE")] = Field(
        default="", description="CA that client certificates must chain to: mTLS"
    )
    insecure: bool = Field(
        default=False,
        description="allow a non-loopback listener without token or mTLS",
    )
    metrics_listen: Annotated[str, Flag(metavar="HOST:PORT")] = Field(
        default="", description="serve Prometheus /metrics there (HOST defaults to 127.0.0.1)"
    )
    grace: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=20.0,
        gt=0,
        le=WEEK,
        description="seconds between SIGINT and SIGTERM when a run is canceled",
    )
    default_timeout: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=3600.0, gt=0, le=WEEK, description="timeout of a run that asks for none"
    )
    drain_timeout: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=300.0,
        ge=0,
        le=WEEK,
        description="on SIGTERM, how long active runs may finish before they are canceled",
    )
    retention_seconds: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=600.0,
        gt=0,
        le=WEEK,
        description="how long a finished run stays available to Attach",
    )
    retention_bytes: Annotated[int, Flag(metavar="BYTES", default_text="4194304 (4 MiB)")] = Field(
        default=4 * MiB, gt=0, description="output bytes kept per run for Attach"
    )
    state_hold: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=300.0,
        gt=0,
        le=WEEK,
        description="how long terraform's state request waits for a backend to own its run "
        "(one that adopts the run of a backend that died), then gets 503",
    )
    runner_bin: Annotated[
        str, Flag(metavar="PATH", default_text="iac-runner beside this Python, else on PATH")
    ] = Field(
        default="",
        validation_alias="IAC_RUNNER_BIN",
        description="the iac-runner executable each run starts",
    )
    accept: Annotated[list[str], NoDecode, Flag(metavar="OPERATION", default_text="all")] = Field(
        default_factory=list,
        description=f"an operation this runner accepts ({', '.join(OPERATIONS)}), repeatable; "
        "a plan-only runner refuses every state-changing command with PERMISSION_DENIED",
    )
    tools: Annotated[list[tuple[str, str, str]], NoDecode, Flag("--tool", "NAME@VERSION=PATH")] = (
        Field(
            default_factory=list,
            description="another binary of a tool, repeatable, e.g. "
            "terraform@1.9.8=/opt/terraform/1.9.8/terraform; the version is read from the "
            "binary (`version -json`)",
        )
    )

    # -- one value at a time ------------------------------------------------------------

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value, any_port=True)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str) -> str:
        return value and _host_port(value, any_port=True, host_optional=True)

    @field_validator("workspace_root")
    @classmethod
    def _workspace_root(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the workspace root must not be empty")
        # The root is created by the first run that needs it: what exists of it must be
        # directories, or every run would fail.
        path = os.path.abspath(value)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise ValueError(f"workspace root {value!r} cannot be a directory: {path!r} is a file")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        items = _items(value)
        if not isinstance(items, list):
            return items
        labels: dict[str, str] = {}
        for item in items:
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"label {item!r} must be KEY=VALUE, e.g. provider=aws")
            if not LABEL_KEY_RE.match(key):
                raise ValueError(
                    f"label key {key!r} must be letters, digits, '_', '.', '/' or '-', "
                    "starting and ending with a letter or digit"
                )
            if not LABEL_VALUE_RE.match(val):
                raise ValueError(
                    f"label value {val!r} of {key!r} must be at most 128 letters, digits, "
                    "'_', '.', '/', ':' or '-'"
                )
            labels[key] = val
        return labels

    @field_validator("runner_id")
    @classmethod
    def _runner_id(cls, value: str) -> str:
        if value and not RUNNER_ID_RE.match(value):
            raise ValueError(
                f"runner id {value!r} must be 1-128 letters, digits, '_', '.', ':', '@' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and not TOKEN_RE.match(value):
            raise ValueError(
                "the token must be printable ASCII without spaces; "
                "make one with `openssl rand -hex 16`"
            )
        return value

    @field_validator("tls_cert", "tls_key", "tls_client_ca")
    @classmethod
    def _tls_file(cls, value: str) -> str:
        return _existing_file(value)

    @field_validator("insecure", mode="before")
    @classmethod
    def _insecure(cls, value: object) -> bool:
        return parse_bool(value)

    @field_validator("runner_bin")
    @classmethod
    def _runner_bin(cls, value: str) -> str:
        if value and not (os.path.isfile(value) and os.access(value, os.X_OK)):
            raise ValueError(f"{value!r} is not an executable file")
        return value

    @field_validator("accept", mode="before")
    @classmethod
    def _accept(cls, value: object) -> object:
        items = _items(value)
        for item in items if isinstance(items, list) else []:
            if item not in OPERATIONS:
                raise ValueError(f"{item!r} is not an operation; use: {', '.join(OPERATIONS)}")
        return items

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: object) -> object:
        items = _items(value)
        if not (isinstance(items, list) and all(isinstance(v, str) for v in items)):
            return items
        try:
            entries = parse_tool_entries(",".join(items))
            for name, _, _ in entries:
                get_spec(name)
        except ToolError as exc:
            raise ValueError(str(exc)) from None
        for name, version, path in entries:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise ValueError(f"{name}@{version}={path}: not an executable file")
        return entries

    # -- the rules between them ---------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> ServerConfig:
        model = type(self)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError(
                f"{names(model, 'tls_cert')} and {names(model, 'tls_key')} must be given together"
            )
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError(
                f"{names(model, 'tls_client_ca')} (mTLS) needs {names(model, 'tls_cert')} "
                f"and {names(model, 'tls_key')}"
            )
        if not self.is_loopback():
            if not (self.token or self.tls_client_ca or self.insecure):
                raise ValueError(
                    f"refusing to listen on non-loopback address {self.host!r} without auth: "
                    f"set {names(model, 'token')} or {names(model, 'tls_client_ca')} for mTLS, "
                    f"or pass {flag_name(model, 'insecure')} ({env_name(model, 'insecure')}=true) "
                    "if the network is trusted"
                )
            if self.token and len(self.token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"{names(model, 'token')} is {len(self.token)} characters; on a non-loopback "
                    f"address it must be at least {MIN_TOKEN_LENGTH}: make one with "
                    "`openssl rand -hex 16`"
                )
        if not self.runner_binary():
            raise ValueError(
                "iac-runner executable not found: install the project or set "
                f"{names(model, 'runner_bin')}"
            )
        if not self.runner_id:
            self.runner_id = socket.gethostname()
        return self

    # -- what the server asks -----------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """Sizes a run's workspace archive and artifacts may have (fixed, not settings)."""
        return LIMITS

    @property
    def host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]")

    def is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def runner_binary(self) -> str:
        """The `iac-runner` executable: --runner-bin, else beside this Python, else PATH."""
        if self.runner_bin:
            return self.runner_bin if os.access(self.runner_bin, os.X_OK) else ""
        beside = os.path.join(os.path.dirname(sys.executable), "iac-runner")
        if os.access(beside, os.X_OK):
            return beside
        return shutil.which("iac-runner") or ""


class HealthConfig(BaseSettings):
    """`iac-runner-server health` settings: probe a runner's grpc.health.v1 service."""

    model_config = _settings("IAC_RUNNER_HEALTH_")

    address: Annotated[str, Flag(metavar="HOST:PORT")] = Field(
        default="127.0.0.1:50051",
        validation_alias="IAC_RUNNER_LISTEN",
        description="the runner to probe",
    )
    tls_ca: Annotated[str, Flag(metavar="FILE")] = Field(
        default="",
        validation_alias="IAC_RUNNER_TLS_CA",
        description="CA to verify the runner's certificate with; enables TLS (the address's "
        "HOST must be a name in the certificate)",
    )
    tls_cert: Annotated[str, Flag(metavar="FILE")] = Field(
        default="",
        description="client certificate (PEM) for a runner that requires mTLS, with --tls-key",
    )
    tls_key: Annotated[str, Flag(metavar="FILE")] = Field(
        default="", description="client private key (PEM), with --tls-cert"
    )
    timeout: Annotated[float, Flag(metavar="SECONDS")] = Field(
        default=5.0, gt=0, description="how long to wait for the answer"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _host_port(value, any_port=False)

    @field_validator("tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _tls_file(cls, value: str) -> str:
        return _existing_file(value)

    @model_validator(mode="after")
    def _consistent(self) -> HealthConfig:
        model = type(self)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError(
                f"{names(model, 'tls_cert')} and {names(model, 'tls_key')} must be given together"
            )
        if self.tls_cert and not self.tls_ca:
            raise ValueError(
                f"a client certificate needs TLS: set {names(model, 'tls_ca')} as well"
            )
        return self
