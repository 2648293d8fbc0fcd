"""The one clock leases are read against: the database's.

A lease written by one backend and judged expired by another (a run's heartbeat, a
delivery's claim) must be measured on one clock, or a backend whose clock runs ahead takes
over work that is still alive. On PostgreSQL, shared by every backend, that clock is the
server's; SQLite is one file on one host, whose clock every backend on it shares.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Interval, func, literal, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from backend.models.base import UTCDateTime, utcnow


def db_now(session: AsyncSession, offset: float = 0.0) -> ColumnElement[datetime]:
    """The database's time, `offset` seconds on, as an expression for a statement."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        now: ColumnElement[Any] = func.statement_timestamp()
        if offset:
            now = now + literal(timedelta(seconds=offset), Interval())
        return type_coerce(now, UTCDateTime())
    return literal(utcnow() + timedelta(seconds=offset), UTCDateTime())
