"""SQLite on the event loop (backend.db.InlineConnection): no worker threads, one connection
that sessions queue for without blocking the loop, errors that surface as SQLAlchemy's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from backend.db import Database, InlineConnection

pytestmark = pytest.mark.anyio


async def _database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'db' / 'x.db'}")
    async with database.session() as session:
        await session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        await session.execute(text("INSERT INTO counter (id, n) VALUES (1, 0)"))
    return database


async def _increment(database: Database) -> None:
    async with database.session() as session:
        n = await session.scalar(text("SELECT n FROM counter WHERE id = 1"))
        await asyncio.sleep(0)  # let every other task run in between read and write
        await session.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})


async def test_statements_run_on_the_loop_thread(tmp_path: Path) -> None:
    database = await _database(tmp_path)
    try:
        await asyncio.gather(*(_increment(database) for _ in range(10)))
        async with database.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.driver_connection, InlineConnection)
        # aiosqlite would have started one worker thread per connection.
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if "_connection_worker_thread" in n], names
    finally:
        await database.dispose()


async def test_concurrent_transactions_take_turns(tmp_path: Path) -> None:
    """40 read-then-write transactions at once: none fails with "database is locked" and
    none loses another's update."""
    database = await _database(tmp_path)
    try:
        await asyncio.gather(*(_increment(database) for _ in range(40)))
        async with database.session() as session:
            assert await session.scalar(text("SELECT n FROM counter WHERE id = 1")) == 40
    finally:
        await database.dispose()


async def test_a_waiting_session_does_not_block_the_loop(tmp_path: Path) -> None:
    database = await _database(tmp_path)
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with database.session() as session:
            await session.execute(text("UPDATE counter SET n = 7 WHERE id = 1"))
            holding.set()
            await release.wait()

    async def reader() -> int | None:
        await holding.wait()
        async with database.session() as session:
            n: int | None = await session.scalar(text("SELECT n FROM counter WHERE id = 1"))
            return n

    try:
        held = asyncio.create_task(holder())
        read = asyncio.create_task(reader())
        await asyncio.wait_for(holding.wait(), 10)
        for _ in range(20):  # the loop goes on turning while the reader waits its turn
            await asyncio.sleep(0)
        assert not read.done()
        release.set()
        assert await asyncio.wait_for(read, 10) == 7  # it saw the holder's commit
        await held
    finally:
        await database.dispose()


async def test_an_sql_error_surfaces_and_the_connection_lives_on(tmp_path: Path) -> None:
    database = await _database(tmp_path)
    try:
        with pytest.raises(OperationalError, match="no such table"):
            async with database.session() as session:
                await session.execute(text("SELECT * FROM nowhere"))
        async with database.session() as session:
            assert await session.scalar(text("SELECT n FROM counter")) == 0
    finally:
        await database.dispose()


async def test_in_memory_database() -> None:
    database = Database("sqlite://")
    try:
        async with database.session() as session:
            assert await session.scalar(text("SELECT 41 + 1")) == 42
    finally:
        await database.dispose()


async def _kill_pool_connections(database: Database, url: str) -> None:
    async def backend_pid() -> int:
        async with database.session() as session:
            pid: int = await session.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)  # overlap, so the pool opens several connections
            return pid

    pids = set(await asyncio.gather(*(backend_pid() for _ in range(4))))
    admin = Database(url)
    try:
        async with admin.engine.connect() as conn:
            for pid in pids:
                await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    finally:
        await admin.dispose()


async def test_postgresql_connections_closed_under_the_pool_are_replaced(
    pg_session_url: str,
) -> None:
    """The pool's connections are closed under it (as by a database restart): every
    checkout pings first, so the next sessions get working connections, not errors."""
    database = Database(pg_session_url)
    try:
        await _kill_pool_connections(database, pg_session_url)
        for _ in range(8):
            async with database.session() as session:
                assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await database.dispose()


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """Commits never checkpoint (autocheckpoint is off on the loop's connection): the WAL
    reaches the database file through the background checkpointer."""
    database = await _database(tmp_path)
    main = tmp_path / "db" / "x.db"
    try:
        async with database.session() as session:
            assert await session.scalar(text("PRAGMA wal_autocheckpoint")) == 0
            await session.execute(text("CREATE TABLE blob (data BLOB)"))
            before = main.stat().st_size
            await session.execute(text("INSERT INTO blob VALUES (zeroblob(4000000))"))
        assert main.stat().st_size == before  # still only in the WAL
        deadline = asyncio.get_running_loop().time() + 15
        while main.stat().st_size < before + 4_000_000:
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint in 15 s"
            await asyncio.sleep(0.05)
    finally:
        await database.dispose()
    assert database._checkpoints is None  # stopped with the database
