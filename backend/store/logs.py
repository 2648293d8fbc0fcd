"""A run's log in the database: chunks of consecutive lines, each with its seq range."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import NotFound
from backend.logs.batch import LogBatch
from backend.models import Deployment, LogChunk, Run

# Chunks read per transaction, by a follower's replay and by a download alike: a chunk holds
# up to 2000 lines or 256 KiB (the writer's flush size), so a page is 2 MiB at most whatever
# the log's length, and five readers of a long log hold 10 MiB, not 50 each.
PAGE_ROWS = 8


async def chunk_page(
    session: AsyncSession,
    run_id: int,
    after_seq: int,
    upto_seq: int | None,
    rows: int = PAGE_ROWS,
) -> list[LogBatch]:
    """At most `rows` chunks holding lines after `after_seq` (and up to `upto_seq`), in
    order: one page of the log, read in a transaction of its own."""
    query = select(LogChunk.first_seq, LogChunk.last_seq, LogChunk.data).where(
        LogChunk.run_id == run_id, LogChunk.last_seq > after_seq
    )
    if upto_seq is not None:
        query = query.where(LogChunk.first_seq <= upto_seq)
    result = await session.execute(query.order_by(LogChunk.first_seq).limit(rows))
    return [LogBatch(*row) for row in result]


def page_text(chunk: LogBatch, after_seq: int, upto_seq: int) -> tuple[str, int]:
    """The lines of `chunk` after `after_seq` and up to `upto_seq` as text, one line per
    line, and the last seq in it. A chunk wholly inside the range (all but the first and
    last of a download) is its stored text as it is."""
    part = chunk.after(after_seq)
    part = part.upto(upto_seq) if part is not None else None
    if part is None:
        return "", after_seq
    return part.text + "\n", part.last_seq


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
