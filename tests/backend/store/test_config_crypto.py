"""Settings (env names, URL normalisation, secrets hidden) and Fernet key handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from backend.config import Settings, normalize_database_url
from backend.crypto import Cipher, DecryptionFailed, EncryptionUnavailable, MalformedKey, parse_key


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_are_normalised(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "nonsense", "postgresql+pg8000://u@h/db"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        normalize_database_url(url)


def test_settings_come_from_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    env_file = tmp_path / ".env"
    env_file.write_text(f"IAC_PORT=9001\nENCRYPTION_KEY={key}\nUNRELATED=1\n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db/iac")
    monkeypatch.setenv("IAC_API_TOKEN", "admin-token-123456")
    monkeypatch.setenv("IAC_APPLY_TIMEOUT", "60")
    settings = Settings.load(env_file=env_file)
    assert settings.port == 9001
    assert settings.database_url == "postgresql+asyncpg://u:secret@db/iac"
    assert settings.timeout_for("apply") == 60 and settings.timeout_for("plan") == 3600
    shown = settings.display()
    assert shown["database_url"] == "postgresql+asyncpg://u:***@db/iac"
    assert shown["encryption_key"] == shown["api_token"] == "********"
    assert "secret" not in str(shown) and key not in str(shown)


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.load(env_file=None, data_dir=tmp_path / "d")
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'd' / 'iac.db'}"
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.max_config_bytes == 10 * 1024 * 1024


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"encryption_key": "short"}, "ENCRYPTION_KEY is malformed"),
        ({"database_url": "mysql://x/y"}, "not supported"),
        ({"port": 70000}, "less than or equal"),
        ({"public_url": "ftp://x"}, "http:// or https://"),
    ],
)
def test_bad_settings_say_what_is_wrong(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.load(env_file=None, **values)


def test_cipher_round_trip_and_rotation() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Cipher(old).encrypt("s3cret")
    assert b"s3cret" not in token
    assert Cipher(old).decrypt(token) == "s3cret"
    assert Cipher(f"{new},{old}").decrypt(token) == "s3cret"
    with pytest.raises(DecryptionFailed, match="wrong key"):
        Cipher(new).decrypt(token)
    with pytest.raises(EncryptionUnavailable, match="generate-encryption-key.sh"):
        Cipher(None).encrypt("x")


@pytest.mark.parametrize(
    "key",
    ["", "abc", "x" * 44, f"{Fernet.generate_key().decode()},bad"],
    ids=["empty", "short", "not-base64", "second-bad"],
)
def test_malformed_keys(key: str) -> None:
    with pytest.raises(MalformedKey, match="ENCRYPTION_KEY"):
        parse_key(key)
