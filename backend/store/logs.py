"""A run's log in the database: chunks of consecutive lines, each with its seq range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import NotFound
from backend.models import Deployment, LogChunk, Run


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


@dataclass(frozen=True)
class StoredChunk:
    """A chunk's seq range and text, without the rest of its row."""

    first_seq: int
    last_seq: int
    data: str


async def chunk_page(
    session: AsyncSession, run_id: int, after_seq: int, upto_seq: int, rows: int
) -> list[StoredChunk]:
    """At most `rows` chunks holding lines after `after_seq` and up to `upto_seq`, in order:
    one page of the log as text (``page_text``), read in a transaction of its own."""
    result = await session.execute(
        select(LogChunk.first_seq, LogChunk.last_seq, LogChunk.data)
        .where(
            LogChunk.run_id == run_id,
            LogChunk.last_seq > after_seq,
            LogChunk.first_seq <= upto_seq,
        )
        .order_by(LogChunk.first_seq)
        .limit(rows)
    )
    return [StoredChunk(*row) for row in result]


def page_text(chunk: StoredChunk, after_seq: int, upto_seq: int) -> tuple[str, int]:
    """The lines of `chunk` after `after_seq` and up to `upto_seq` as text, one line per
    line, and the last seq in it. A chunk wholly inside the range (all but the first and
    last of a download) is its stored text as it is, never split."""
    if chunk.first_seq > after_seq and chunk.last_seq <= upto_seq:
        return chunk.data + "\n", chunk.last_seq
    lines = chunk.data.split("\n")
    skip = max(after_seq + 1 - chunk.first_seq, 0)
    keep = lines[skip : upto_seq - chunk.first_seq + 1]
    if not keep:
        return "", after_seq
    return "".join(line + "\n" for line in keep), chunk.first_seq + skip + len(keep) - 1


async def last_stored_seq(session: AsyncSession, run_id: int) -> int:
    """The seq of the run's last stored line; NotFound when the run does not exist or its
    deployment is deleted."""
    row = (
        await session.execute(
            select(Run.last_seq, Deployment.name, Deployment.deleted_at)
            .join(Deployment, Deployment.id == Run.deployment_id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    if row.deleted_at is not None:
        raise NotFound(
            f"run {run_id} belongs to the deleted deployment {row.name!r}; restore the "
            "deployment to see it"
        )
    return int(row.last_seq)
