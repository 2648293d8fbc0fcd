"""Backend configuration: one pydantic-settings class read from env vars and ``.env``.

The class is the configuration's documentation: every field says what it does, and
``iac-backend serve`` prints the effective values (secrets hidden) on start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from backend.crypto import MalformedKey, parse_key

MiB = 1024 * 1024


def normalize_database_url(url: str) -> str:
    """Map the URL spellings people write to the async drivers the backend uses.

    ``postgresql://`` and ``postgres://`` become asyncpg, ``sqlite:///`` becomes aiosqlite;
    anything else is refused, because the engine must never block the event loop.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"DATABASE_URL {url!r} is not a database URL") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg", "psycopg2", "psycopg"):
            raise ValueError(f"DATABASE_URL driver {driver!r} is not supported; use asyncpg")
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        if driver not in ("", "aiosqlite", "pysqlite"):
            raise ValueError(f"DATABASE_URL driver {driver!r} is not supported; use aiosqlite")
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(
            f"DATABASE_URL scheme {parsed.drivername!r} is not supported: "
            "use postgresql://... or sqlite:///path"
        )
    return parsed.render_as_string(hide_password=False)


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def derived_public_url(host: str, port: int) -> str:
    """The URL of a backend listening on host:port, as seen from this host (a wildcard
    address is reached through loopback)."""
    if host in WILDCARD_HOSTS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


class Settings(BaseSettings):
    """iac-backend settings; env var names are given in each field's description."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_prefix="IAC_",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("DATABASE_URL", "IAC_DATABASE_URL"),
        description=(
            "DATABASE_URL: postgresql://user:pass@host/db or sqlite:///path; normalised to "
            "the asyncpg / aiosqlite drivers. Default: sqlite file iac.db in the data dir."
        ),
    )
    data_dir: Path = Field(
        default=Path("./.data"),
        description="IAC_DATA_DIR: where the default SQLite database lives.",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ENCRYPTION_KEY", "IAC_ENCRYPTION_KEY"),
        description=(
            "ENCRYPTION_KEY: Fernet key encrypting secrets at rest (comma-separated keys "
            "rotate: first encrypts, all decrypt). Make one with ./generate-encryption-key.sh."
        ),
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="IAC_API_TOKEN: the first admin API token, stored hashed on start.",
    )
    host: str = Field(default="127.0.0.1", description="IAC_HOST: address the API listens on.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="IAC_PORT: port the API listens on."
    )
    public_url: str = Field(
        default="",
        description=(
            "IAC_PUBLIC_URL: the backend's URL as people reach it, for the links it prints "
            "(runners never use it: terraform's state travels over their gRPC connection). "
            "Default: http://HOST:PORT of IAC_HOST/IAC_PORT (--host/--port), with 127.0.0.1 "
            "for 0.0.0.0 and [::1] for ::."
        ),
    )
    max_config_bytes: int = Field(
        default=10 * MiB, gt=0, description="IAC_MAX_CONFIG_BYTES: largest config archive upload."
    )
    max_config_unpacked_bytes: int = Field(
        default=100 * MiB,
        gt=0,
        description="IAC_MAX_CONFIG_UNPACKED_BYTES: largest total size of an archive's files.",
    )
    max_config_files: int = Field(
        default=10_000, gt=0, description="IAC_MAX_CONFIG_FILES: most entries in a config archive."
    )
    max_state_bytes: int = Field(
        default=64 * MiB, gt=0, description="IAC_MAX_STATE_BYTES: largest Terraform state accepted."
    )
    runners_file: Path | None = Field(
        default=None,
        description=(
            "IAC_RUNNERS_FILE: JSON file of runner registrations, a list of "
            '{"name", "address", "token", "tls_ca_pem", "labels"} objects (or '
            '{"runners": [...]}) upserted on start; "${NAME}" in a value is replaced by '
            "the environment variable NAME (for tokens kept out of the file)."
        ),
    )
    plan_timeout: int = Field(
        default=3600, gt=0, description="IAC_PLAN_TIMEOUT: seconds a plan may run."
    )
    apply_timeout: int = Field(
        default=3600, gt=0, description="IAC_APPLY_TIMEOUT: seconds an apply may run."
    )
    destroy_timeout: int = Field(
        default=3600, gt=0, description="IAC_DESTROY_TIMEOUT: seconds a destroy may run."
    )

    plan_ttl: float = Field(
        default=86400,
        gt=0,
        description=(
            "IAC_PLAN_TTL: seconds a plan may wait for its approval; an older one is refused "
            "(re-plan)."
        ),
    )

    backend_id: str = Field(
        default="",
        description=(
            "IAC_BACKEND_ID: this replica's id, stable across restarts so it re-attaches its "
            "own runs at once; default: <hostname>:<port>."
        ),
    )
    runner_poll_interval: float = Field(
        default=2.0, gt=0, description="IAC_RUNNER_POLL_INTERVAL: seconds between runner polls."
    )
    runner_lost_timeout: float = Field(
        default=15.0,
        gt=0,
        description=(
            "IAC_RUNNER_LOST_TIMEOUT: seconds to keep trying to reach a runner that stopped "
            "answering mid-run before the run fails."
        ),
    )
    deleted_retention_days: float = Field(
        default=30,
        ge=0,
        description=(
            "IAC_DELETED_RETENTION_DAYS: days a deleted deployment is kept (hidden, with its "
            "state versions, runs, logs, variables and configurations) and can be restored; "
            "then it is purged for good. 0: at the next purge."
        ),
    )
    audit_retention_days: float = Field(
        default=0,
        ge=0,
        description=(
            "IAC_AUDIT_RETENTION_DAYS: days audit entries are kept; older ones are removed "
            "(a whole prefix, recorded in the log). 0: kept forever."
        ),
    )
    purge_interval: float = Field(
        default=3600,
        gt=0,
        description=(
            "IAC_PURGE_INTERVAL: seconds between two purges of deleted deployments past "
            "their retention (one also runs at start)."
        ),
    )
    schedule_interval: float = Field(
        default=15.0,
        gt=0,
        description=(
            "IAC_SCHEDULE_INTERVAL: seconds between two passes of the scheduler, which queues "
            "the runs of due schedules (every replica runs it; each due time queues one run)."
        ),
    )
    orphan_after: float = Field(
        default=10.0,
        gt=0,
        description=(
            "IAC_ORPHAN_AFTER: seconds without a heartbeat after which another replica "
            "adopts (re-attaches) a run; a backend sends one, and looks for such runs, every "
            "fifth of it."
        ),
    )

    notify_allow: str = Field(
        default="",
        description=(
            "IAC_NOTIFY_ALLOW: comma-separated hosts and CIDRs (e.g. 'hooks.internal, "
            "10.1.2.0/24, 127.0.0.1') a notification may be sent to although they are "
            "internal; every other loopback, link-local, private or reserved address is "
            "refused."
        ),
    )
    notify_allow_private: bool = Field(
        default=False,
        description=(
            "IAC_NOTIFY_ALLOW_PRIVATE: permit notifications to private ranges (10/8, "
            "172.16/12, 192.168/16, 100.64/10, fc00::/7); loopback, link-local (the cloud "
            "metadata address) and the rest stay refused unless in IAC_NOTIFY_ALLOW."
        ),
    )
    notify_poll_interval: float = Field(
        default=2.0,
        gt=0,
        description=(
            "IAC_NOTIFY_POLL_INTERVAL: seconds between two looks for due notifications "
            "(each backend delivers; a delivery is claimed by one)."
        ),
    )
    notify_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description=(
            "IAC_NOTIFY_TIMEOUT: seconds one delivery attempt may take, name resolution, "
            "connection and answer included."
        ),
    )
    notify_max_attempts: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "IAC_NOTIFY_MAX_ATTEMPTS: attempts of one delivery before it is marked failed."
        ),
    )
    notify_backoff: float = Field(
        default=2.0,
        gt=0,
        description=(
            "IAC_NOTIFY_BACKOFF: seconds before the second attempt of a delivery; each "
            "further one waits twice as long as the one before, up to IAC_NOTIFY_BACKOFF_MAX."
        ),
    )
    notify_backoff_max: float = Field(
        default=900.0,
        gt=0,
        description="IAC_NOTIFY_BACKOFF_MAX: the longest wait between two attempts, seconds.",
    )

    @field_validator("encryption_key")
    @classmethod
    def _key_is_fernet(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        try:
            parse_key(value.get_secret_value())
        except MalformedKey as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("api_token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("notify_allow")
    @classmethod
    def _notify_allow_parses(cls, value: str) -> str:
        from backend.notify.guard import Policy  # small: ipaddress and the URL rules

        Policy.of(value)  # a ValueError names the entry
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        if not value:
            return value  # derived from host and port (_default_public_url)
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"IAC_PUBLIC_URL {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        if not self.public_url:
            self.public_url = derived_public_url(self.host, self.port)
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'iac.db').resolve()}"
        self.database_url = normalize_database_url(self.database_url)
        return self

    @classmethod
    def load(cls, env_file: Path | str | None = ".env", **values: Any) -> Settings:
        """Settings from ``values``, then the environment, then ``env_file`` (None: no file)."""
        return cls(_env_file=env_file, **values)  # type: ignore[call-arg]

    def timeout_for(self, operation: str) -> int:
        """Seconds a run of ``operation`` ('plan', 'apply', 'destroy', 'drift') may take."""
        timeouts = {
            "plan": self.plan_timeout,
            "drift": self.plan_timeout,
            "apply": self.apply_timeout,
            "destroy": self.destroy_timeout,
        }
        return timeouts[operation]

    def display(self) -> dict[str, Any]:
        """The effective settings with secrets hidden, for printing on start."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif name == "database_url":
                value = make_url(value).render_as_string(hide_password=True)
            shown[name] = value
        return shown
