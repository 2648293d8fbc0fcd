"""A run's log in the database: chunks of consecutive lines, each with its seq range."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import LogChunk, Run, utcnow


async def append_chunk(session: AsyncSession, run_id: int, first_seq: int, lines: list[str]) -> int:
    """Store lines `first_seq`.. and advance the run's `last_seq`; returns the new last seq."""
    last = first_seq + len(lines) - 1
    session.add(LogChunk(run_id=run_id, first_seq=first_seq, last_seq=last, data="\n".join(lines)))
    await session.execute(
        update(Run).where(Run.id == run_id).values(last_seq=last, heartbeat_at=utcnow())
    )
    return last


async def chunks_after(
    session: AsyncSession, run_id: int, after_seq: int, limit: int = 200
) -> Sequence[LogChunk]:
    """Chunks holding lines after `after_seq`, in order."""
    rows = await session.scalars(
        select(LogChunk)
        .where(LogChunk.run_id == run_id, LogChunk.last_seq > after_seq)
        .order_by(LogChunk.first_seq)
        .limit(limit)
    )
    return rows.all()


def lines_after(chunk: LogChunk, after_seq: int) -> tuple[int, list[str]]:
    """(first seq, lines) of the part of `chunk` after `after_seq`."""
    lines = chunk.data.split("\n")
    skip = max(after_seq + 1 - chunk.first_seq, 0)
    return chunk.first_seq + skip, lines[skip:]


async def log_text(session: AsyncSession, run_id: int, after_seq: int = 0) -> tuple[str, int]:
    """The stored log as text (one line per line), and the last seq in it."""
    parts: list[str] = []
    last = after_seq
    while True:
        chunks = await chunks_after(session, run_id, last, limit=500)
        if not chunks:
            break
        for chunk in chunks:
            first, lines = lines_after(chunk, last)
            parts.extend(lines)
            last = first + len(lines) - 1
    return "".join(line + "\n" for line in parts), last
