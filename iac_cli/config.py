"""Where the backend is and which token to send: flags beat environment beat config file.

One pydantic-settings model, as the backend's and the runner server's: `--url`/`--token`,
then ``IAC_URL``/``IAC_TOKEN``, then the TOML file (``$IAC_CONFIG``, else
``~/.config/iac/config.toml``, honouring ``$XDG_CONFIG_HOME``) with two optional keys::

    url = "https://iac.example.com"
    token = "..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from iac_cli.errors import UsageError

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    # Where the token came from, for error messages ("no token: pass --token ...").
    config_path: Path


def config_path() -> Path:
    explicit = os.environ.get("IAC_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "iac" / "config.toml"


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"backend URL {url!r} must start with http:// or https://")
    return url


class CliSettings(BaseSettings):
    """The CLI's settings. Its sources, strongest first: the flags (keyword arguments),
    the environment (``IAC_`` + the field's name), the config file."""

    model_config = SettingsConfigDict(
        env_prefix="IAC_", env_ignore_empty=True, extra="forbid", strict=True
    )

    url: str = DEFAULT_URL
    token: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, config_path())


def _problem(error: ValidationError, path: Path) -> str:
    """What was wrong, in the user's terms. Environment variables and flags are strings, so
    a key of the wrong type or an unknown one can only be the file's."""
    unknown = sorted(str(e["loc"][0]) for e in error.errors() if e["type"] == "extra_forbidden")
    if unknown:
        return f"config file {path}: unknown keys {unknown}; known keys: url, token"
    first = error.errors()[0]
    if first["type"] == "value_error":
        return str(first["ctx"]["error"])
    return f"config file {path}: {first['loc'][0]} must be a string"


def load_config(url: str | None = None, token: str | None = None) -> Config:
    """Flags (``url``, ``token``) beat ``IAC_URL``/``IAC_TOKEN``, which beat the file."""
    path = config_path()
    if os.environ.get("IAC_CONFIG") and not path.exists():
        raise UsageError(f"config file {path} (from IAC_CONFIG) does not exist")
    flags = {k: v for k, v in (("url", url), ("token", token)) if v}
    try:
        settings = CliSettings(**flags)
    except ValidationError as exc:
        raise UsageError(_problem(exc, path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror or exc}") from None
    return Config(settings.url, settings.token or None, path)
