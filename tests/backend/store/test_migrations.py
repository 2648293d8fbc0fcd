"""Alembic migrations: they build exactly the models' schema on SQLite and PostgreSQL, run
again as a no-op, and go down and up cleanly."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from backend.db import alembic_config, create_engine, migrate
from backend.models import Base

pytestmark = pytest.mark.anyio


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _inspect(url: str) -> tuple[list[Any], set[str], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = None
            if "alembic_version" in tables:
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            return diff, tables, version
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(fresh_db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    await migrate(fresh_db_url)
    diff, tables, version = await _inspect(fresh_db_url)
    assert diff == [], "models and migrations disagree: add a migration"
    assert set(Base.metadata.tables) <= tables
    assert version == head
    await migrate(fresh_db_url)  # every start runs it: a second run changes nothing
    assert (await _inspect(fresh_db_url))[2] == head


async def test_downgrade_to_base_and_up_again(fresh_db_url: str) -> None:
    await migrate(fresh_db_url)
    engine = create_engine(fresh_db_url)

    def downgrade(connection: Connection) -> None:
        from alembic import command

        command.downgrade(alembic_config(connection), "base")

    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
    finally:
        await engine.dispose()
    _, tables, _ = await _inspect(fresh_db_url)
    assert not set(Base.metadata.tables) & tables
    await migrate(fresh_db_url)
    assert (await _inspect(fresh_db_url))[0] == []


async def _insert(conn: Any, sql: str, **values: Any) -> int:
    return int((await conn.execute(text(sql + " RETURNING id"), values)).scalar())


async def test_upgrade_keeps_every_row_and_ids_are_never_reused(fresh_db_url: str) -> None:
    """Rebuilding tables for AUTOINCREMENT (0004) loses no row and breaks no reference
    (foreign keys off while SQLite migrates: dropping a table would cascade); afterwards a
    deleted run's id, at the top of its table, is not handed out again."""
    await migrate(fresh_db_url, "0003")
    engine = create_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            d = await _insert(
                conn,
                "INSERT INTO deployments (name, tool, required_labels, default_priority,"
                " created_at) VALUES ('web', 'terraform', '{}', 0, '2026-01-01 00:00:00')",
            )
            c = await _insert(
                conn,
                "INSERT INTO config_versions (deployment_id, version, archive, sha256, size,"
                " created_at) VALUES (:d, 1, :blob, 'x', 1, '2026-01-01 00:00:00')",
                d=d,
                blob=b"\x1f\x8b",
            )
            run_sql = (
                "INSERT INTO runs (deployment_id, config_version_id, operation, status,"
                " priority, auto_approve, created_at, error_msg, wait_reason, last_seq,"
                " dispatch_count) VALUES (:d, :c, 'plan', 'succeeded', 0, false,"
                " '2026-01-01 00:00:00', '', '', 2, 1)"
            )
            await _insert(conn, run_sql, d=d, c=c)
            top = await _insert(conn, run_sql, d=d, c=c)
            await _insert(
                conn,
                "INSERT INTO run_events (run_id, at, kind, message)"
                " VALUES (:r, '2026-01-01 00:00:00', 'queued', '')",
                r=top,
            )
            await _insert(
                conn,
                "INSERT INTO log_chunks (run_id, first_seq, last_seq, data) VALUES (:r, 1, 2, 'a')",
                r=top,
            )
    finally:
        await engine.dispose()
    await migrate(fresh_db_url)
    engine = create_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM log_chunks"))).scalar()
            assert count == 1
            owner = await conn.execute(text(f"SELECT deployment_id FROM runs WHERE id = {top}"))
            assert owner.scalar() == d
            kinds = (await conn.execute(text("SELECT kind FROM run_events"))).scalars().all()
            assert kinds == ["queued"]
            await conn.execute(text(f"DELETE FROM runs WHERE id = {top}"))
            left = (await conn.execute(text("SELECT count(*) FROM log_chunks"))).scalar()
            assert left == 0, "the run's log went with it"
            new = await _insert(
                conn, run_sql.replace(" auto_approve,", "").replace(" false,", ""), d=d, c=c
            )
            assert new > top, (new, top)
    finally:
        await engine.dispose()


async def _downgrade(url: str, revision: str) -> None:
    engine = create_engine(url)

    def downgrade(connection: Connection) -> None:
        from alembic import command

        command.downgrade(alembic_config(connection), revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
    finally:
        await engine.dispose()


async def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


CHILDREN = ("config_versions", "variables", "runs", "run_events", "log_chunks", "state_versions")


async def _populate(url: str, *names: str) -> None:
    """One deployment per name with a row in every table that refers to it (raw SQL: the
    models may be ahead of the schema being tested)."""
    engine = create_engine(url)
    now = "2026-01-01 00:00:00+00:00"
    try:
        async with engine.begin() as conn:
            for i, name in enumerate(names, start=1):
                statements = [
                    "INSERT INTO deployments (id, name, tool, required_labels, default_priority,"
                    f" created_at) VALUES ({i}, '{name}', 'terraform', '{{}}', 0, '{now}')",
                    "INSERT INTO config_versions (id, deployment_id, version, archive, sha256,"
                    f" size, created_at) VALUES ({i}, {i}, 1, :blob, 'x', 1, '{now}')",
                    "INSERT INTO variables (deployment_id, key, value, category, sensitive)"
                    f" VALUES ({i}, 'k', 'v', 'terraform', false)",
                    "INSERT INTO runs (id, deployment_id, config_version_id, operation, status,"
                    " priority, auto_approve, created_at, error_msg, wait_reason, last_seq,"
                    f" dispatch_count) VALUES ({i}, {i}, {i}, 'plan', 'succeeded', 0, false,"
                    f" '{now}', '', '', 1, 1)",
                    f"INSERT INTO run_events (run_id, at, kind, message) VALUES ({i}, '{now}',"
                    " 'queued', '')",
                    "INSERT INTO log_chunks (run_id, first_seq, last_seq, data) VALUES"
                    f" ({i}, 1, 1, 'line')",
                    "INSERT INTO state_versions (deployment_id, serial, lineage, data, md5,"
                    f" created_at) VALUES ({i}, 1, 'l', :blob, 'm', '{now}')",
                ]
                for statement in statements:
                    await conn.execute(text(statement), {"blob": b"x"})
    finally:
        await engine.dispose()


async def test_0005_keeps_every_row_up_and_down(fresh_db_url: str) -> None:
    """Adding and dropping deployments.deleted_at loses no row of a live deployment (on
    SQLite a table rebuilt with foreign keys on would cascade its DROP to every child)."""
    await migrate(fresh_db_url, "0004")
    await _populate(fresh_db_url, "web", "api")
    await migrate(fresh_db_url)
    for table in ("deployments", *CHILDREN):
        assert await _count(fresh_db_url, table) == 2, table
    engine = create_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE deployments SET deleted_at = CURRENT_TIMESTAMP WHERE name = 'api'")
            )
    finally:
        await engine.dispose()
    await _downgrade(fresh_db_url, "0004")
    # The deleted one is purged (it would come back as live), the live one keeps everything.
    for table in ("deployments", *CHILDREN):
        assert await _count(fresh_db_url, table) == 1, table
    await migrate(fresh_db_url)
    assert (await _inspect(fresh_db_url))[0] == []


async def _column(url: str, sql: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).scalars().all())
    finally:
        await engine.dispose()


async def test_0006_turns_auto_approve_into_a_policy_and_back(fresh_db_url: str) -> None:
    """runs.auto_approve (true/false) becomes approve_policy (always/never) and comes back
    on downgrade; no row of any table is lost either way; history entries are by 'system'."""
    await migrate(fresh_db_url, "0005")
    await _populate(fresh_db_url, "web", "api")
    engine = create_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE runs SET auto_approve = true WHERE id = 2"))
    finally:
        await engine.dispose()
    await migrate(fresh_db_url)
    for table in ("deployments", *CHILDREN):
        assert await _count(fresh_db_url, table) == 2, table
    policies = await _column(fresh_db_url, "SELECT approve_policy FROM runs ORDER BY id")
    assert policies == ["never", "always"]
    actors = await _column(fresh_db_url, "SELECT actor FROM run_events")
    assert actors == ["system", "system"]
    defaults = await _column(fresh_db_url, "SELECT auto_approve FROM deployments")
    assert defaults == ["never", "never"]
    await _downgrade(fresh_db_url, "0005")
    for table in ("deployments", *CHILDREN):
        assert await _count(fresh_db_url, table) == 2, table
    flags = await _column(fresh_db_url, "SELECT auto_approve FROM runs ORDER BY id")
    assert [bool(f) for f in flags] == [False, True]
    await migrate(fresh_db_url)
    assert (await _inspect(fresh_db_url))[0] == []


def test_the_head_read_from_the_files_is_alembics() -> None:
    """`iac-backend serve` skips its migration child when the database is at this head."""
    from backend.db import head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
