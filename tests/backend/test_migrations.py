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
