"""Where the backend is and which token to send: flags beat environment beat config file.

The file is TOML (``$IAC_CONFIG``, else ``~/.config/iac/config.toml``, honouring
``$XDG_CONFIG_HOME``) with two optional keys::

    url = "https://iac.example.com"
    token = "..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from iac_cli.errors import UsageError

DEFAULT_URL = "http://127.0.0.1:8000"
KEYS = ("url", "token")


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    # Where the token came from, for error messages ("no token: pass --token ...").
    config_path: Path


def config_path(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    explicit = env.get("IAC_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "iac" / "config.toml"


def read_config_file(path: Path, *, required: bool) -> dict[str, str]:
    """The file's url/token; {} when it does not exist (an error if it was named explicitly)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} (from IAC_CONFIG) does not exist") from None
        return {}
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UsageError(f"config file {path}: unknown keys {unknown}; known keys: url, token")
    values: dict[str, str] = {}
    for key in KEYS:
        if key in data:
            if not isinstance(data[key], str):
                raise UsageError(f"config file {path}: {key} must be a string")
            values[key] = data[key]
    return values


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"backend URL {url!r} must start with http:// or https://")
    return url


def load_config(
    url: str | None = None,
    token: str | None = None,
    env: dict[str, str] | os._Environ[str] = os.environ,
) -> Config:
    """Flags (``url``, ``token``) beat ``IAC_URL``/``IAC_TOKEN``, which beat the file."""
    path = config_path(env)
    file = read_config_file(path, required=bool(env.get("IAC_CONFIG")))
    chosen_url = url or env.get("IAC_URL") or file.get("url") or DEFAULT_URL
    chosen_token = token or env.get("IAC_TOKEN") or file.get("token") or None
    return Config(normalize_url(chosen_url), chosen_token, path)
