"""Database access: the async engine, sessions, and schema migrations.

One ``Database`` per process wraps the engine and session factory. SQLite gets WAL (readers
never wait for the writer), a busy timeout, foreign keys, and ``BEGIN IMMEDIATE``
transactions: a deferred SQLite transaction that reads and then writes can fail at once with
"database is locked" when another writer got in between, whatever the busy timeout, while an
immediate one simply waits its turn. PostgreSQL needs none of that.

SQLite runs on the event loop's thread, through one connection (see ``InlineConnection``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from sqlalchemy import Connection, event, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backend.config import normalize_database_url

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (and Mako) are imported only by the functions that migrate: `iac-backend serve`
# migrates in a short-lived child process (`backend.migrate`), so the server itself never
# holds them (~11 MB resident).

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections a PostgreSQL pool keeps open (SQLAlchemy's default, 5, is fewer than a busy
# backend's concurrent transactions: the overflow ones were opened and closed again all the
# time, a new server process each). Up to 10 more are opened at peaks.
PG_POOL_SIZE = 20
# Any constant will do: every backend replica takes this advisory lock before migrating, so
# replicas starting together on one PostgreSQL migrate one after another.
MIGRATION_LOCK_KEY = 0x1AC0_0001


def database_lost(exc: BaseException) -> bool:
    """A lost or refused database connection, as opposed to an error in a statement."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, ConnectionError | TimeoutError)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> str | None:
    """The file of an SQLite database URL; None for PostgreSQL or SQLite in memory."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    return database if database and database != ":memory:" else None


class SqliteInUse(Exception):
    """Another backend process serves this SQLite database."""


def hold_sqlite(url: str) -> int | None:
    """Take `<database>.lock` for this process's lifetime (the descriptor returned, never
    closed): one backend process per SQLite database. A second one would stall this one's
    event loop, up to the busy timeout per statement, each time it held the write lock.
    SqliteInUse when another process holds it; None for PostgreSQL."""
    import fcntl

    path = sqlite_file(url)
    if path is None:
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SqliteInUse(
            f"another iac-backend serves {path}: SQLite serves one backend process; run "
            "several on PostgreSQL (see docs/scaling.md)"
        ) from None
    return fd


class _Inline:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    @staticmethod
    def put_nowait(item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection that calls sqlite3 on the caller's thread, not its own.

    aiosqlite sends every call (cursor, execute, fetch, close: four per statement) to a
    thread of its own and back; each hop costs more than the statement. Measured here, a
    transaction of one SELECT and one INSERT through SQLAlchemy took 2.2 ms of CPU over
    aiosqlite against 0.14 ms over a plain sqlite3 connection. The backend's statements
    are small and its SQLite transactions are serialised anyway (``BEGIN IMMEDIATE``), so
    it runs them on the event loop through a single pooled connection: a session waits
    for the connection asynchronously, never inside SQLite's busy handler, which would
    block the loop. Another *process* holding the write lock would make the loop wait, up
    to the busy timeout per statement: `iac-backend serve` refuses to start beside another
    one on the same file (``hold_sqlite``), and other tools should read only. The WAL
    checkpoints, the only fsyncs with synchronous=NORMAL, run in a worker thread
    (``_checkpoint_loop``); the database belongs on a local disk.

    It replaces aiosqlite's queue to its worker (``_tx``), the same internal that
    SQLAlchemy's own aiosqlite adapter reaches into (it sets the isolation level through
    ``_tx`` and ``_conn``); aiosqlite is pinned, and tests/backend/store/test_db.py checks
    these internals, so an upgrade that changes them fails there, not in production.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _Inline()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start


def keep_private(path: str) -> None:
    """The database file (and its WAL and shared memory, which SQLite creates with the
    database file's mode) readable by this user alone: it holds the state's lock holders,
    the logs, the encrypted secrets."""
    for name in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


def _sqlite_connect(
    dbapi_connection: Any, _record: Any, *, foreign_keys: bool = True, path: str | None = None
) -> None:
    if path:
        keep_private(path)  # before WAL mode makes the WAL and shm files
    # The driver's own transaction handling would BEGIN lazily (deferred); turn it off so
    # the "begin" hook below decides how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` (any spelling ``normalize_database_url`` accepts).
    ``foreign_keys=False``: SQLite enforces no foreign key (for migrations only)."""
    url = normalize_database_url(url)
    if is_sqlite(url):
        path = sqlite_file(url)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        extra = kwargs.pop("connect_args", {})

        def connect() -> InlineConnection:
            args, options = engine.dialect.create_connect_args(engine.url)
            return InlineConnection(partial(sqlite3.connect, *args, **(options | extra)))

        if path and "poolclass" not in kwargs:  # (in memory: one connection already)
            single = {"poolclass": pool.AsyncAdaptedQueuePool, "pool_size": 1, "max_overflow": 0}
            kwargs = single | kwargs
        engine = create_async_engine(url, async_creator=connect, **kwargs)
        event.listen(
            engine.sync_engine,
            "connect",
            partial(_sqlite_connect, foreign_keys=foreign_keys, path=path),
        )
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # A bounded connect timeout: an unreachable server fails start-up in seconds, not minutes.
    kwargs.setdefault("connect_args", {"timeout": 10})
    kwargs.setdefault("pool_size", PG_POOL_SIZE)
    # pool_pre_ping costs three round trips per checkout with asyncpg (BEGIN, ";",
    # ROLLBACK), a seventh of a busy backend's loop time. Pinging only connections idle a
    # while was tried: after a database restart, a connection used a moment before then
    # failed its first statement, an API request answered 500. Correct first.
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # _checkpoint_loop does it
    cursor.close()


# SQLite's WAL is copied into the database file (two fsyncs) this often by a thread of its
# own, instead of by whichever commit crosses 1000 pages, on the event loop (InlineConnection).
WAL_CHECKPOINT_INTERVAL_S = 1.0


def _checkpoint_loop(path: str, stop: threading.Event) -> None:
    """The checkpointer thread. Its connection is used and closed by this thread alone
    (closing an sqlite3 connection while another thread runs a statement on it crashes)."""
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        while not stop.wait(WAL_CHECKPOINT_INTERVAL_S):
            try:
                # PASSIVE: copies what no reader still needs, never waits for a lock.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("SQLite WAL checkpoint failed: %s", exc)
    finally:
        conn.close()


class Database:
    """The engine and session factory of one process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_database_url(url)
        self.engine = create_engine(self.url, **engine_kwargs)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite_file = sqlite_file(self.url)
        # The checkpointer thread and the event that stops it, from the first session on.
        self._checkpoints: tuple[threading.Thread, threading.Event] | None = None
        if self._sqlite_file:
            event.listen(self.engine.sync_engine, "connect", _no_autocheckpoint)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends normally, rolled back otherwise."""
        if self._sqlite_file and self._checkpoints is None:
            stop = threading.Event()
            thread = threading.Thread(
                target=_checkpoint_loop,
                args=(self._sqlite_file, stop),
                name="sqlite-wal-checkpoints",
                daemon=True,
            )
            thread.start()
            self._checkpoints = thread, stop
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpoints is not None:
            thread, stop = self._checkpoints
            self._checkpoints = None
            stop.set()
            await asyncio.to_thread(thread.join)
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    command.upgrade(alembic_config(connection), revision)


def head_revision() -> str:
    """The newest migration's revision, read from the files (without importing Alembic):
    the one no other revises."""
    found: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"):
        text = path.read_text()
        revision = re.search(r'^revision: str = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision: str \| None = (?:"([^"]+)"|None)', text, re.M)
        if revision is not None and down is not None:
            found[revision.group(1)] = down.group(1)
    heads = set(found) - {d for d in found.values() if d}
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def is_current(url: str) -> bool:
    """Whether the database is at the newest migration already (False when unsure)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        return version == head_revision()
    except Exception:
        return False
    finally:
        await engine.dispose()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:5]}")


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``; safe to call on every start.

    On SQLite, foreign keys are off while migrating: batch mode rebuilds a table by
    copying it and dropping the old one, and dropping a table with foreign keys on would
    first delete its rows, cascading into every table that refers to it. The keys are
    checked before the migration commits."""
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
            if conn.dialect.name == "sqlite":
                await conn.run_sync(_check_foreign_keys)
    finally:
        await engine.dispose()
