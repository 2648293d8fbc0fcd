"""Backend test fixtures. Every test that takes ``db_url`` (directly or through ``settings``,
``app``, ``client`` or ``db``) runs twice: on a fresh SQLite file and on PostgreSQL.

PostgreSQL: one database ``iac_test_<hex>`` is created on 127.0.0.1:5432 per test session,
migrated once, emptied before each test and dropped at the end; when the server is
unreachable the PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI

from backend.app import create_app
from backend.config import Settings
from backend.db import Database, migrate
from backend.models import Base
from tests.conftest import skip_unless_strict

PG_HOST = os.environ.get("IAC_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("IAC_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("IAC_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("IAC_TEST_PG_DB", "test")

API_TOKEN = "test-admin-token-0123456789"
ENCRYPTION_KEY = Fernet.generate_key().decode()
CONFIG_ENV = (
    "DATABASE_URL",
    "ENCRYPTION_KEY",
    "IAC_DATABASE_URL",
    "IAC_ENCRYPTION_KEY",
    "IAC_DATA_DIR",
    "IAC_API_TOKEN",
    "IAC_RUNNERS_FILE",
    "IAC_HOST",
    "IAC_PORT",
    "IAC_PUBLIC_URL",
)


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class PgServer:
    """Creates throw-away databases on the test PostgreSQL server."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"iac_test_{secrets.token_hex(6)}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return pg_url(name)

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        skip_unless_strict(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {exc}")
    server = PgServer()
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_session_url(pg_server: PgServer) -> str:
    """The session's PostgreSQL database, migrated once."""
    url = pg_server.create_database()
    asyncio.run(migrate(url))
    return url


async def _truncate_all(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=5)
    try:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database migrated once per session; each test gets a copy (migrating a new
    file takes half a second, for hundreds of tests)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "iac.db"
    asyncio.run(migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "db" / "iac.db"
        target.parent.mkdir(mode=0o700)
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_session_url")
    asyncio.run(_truncate_all(url))
    return url


@pytest.fixture
def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> str:
    """An empty, unmigrated database of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh' / 'iac.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own backend settings must not leak into tests.
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)


def make_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "encryption_key": ENCRYPTION_KEY,
        "api_token": API_TOKEN,
    }
    values.update(overrides)
    return Settings.load(env_file=None, **values)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as c:
        yield c


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no API token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def live_url(app: FastAPI) -> AsyncIterator[str]:
    """The app served by a real uvicorn on an ephemeral loopback port (for real clients).

    The socket listens before uvicorn starts, so clients can connect at once: the kernel
    queues them until uvicorn accepts, and no readiness polling is needed.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # lifespan="off": the ``app`` fixture already ran start-up for this app.
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


ArchiveFactory = Callable[..., bytes]
