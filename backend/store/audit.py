"""The audit log: append-only and tamper-evident.

Each entry holds the SHA-256 of the entry before it (`prev_hash`) and its own `hash`, the
SHA-256 of that and of everything it says. Writers append one at a time (an advisory lock
on PostgreSQL; SQLite writes one transaction at a time anyway), so the entries form one
chain per database. `verify` walks it: an entry edited by hand no longer matches its hash;
an entry removed breaks the next one's link. No API deletes entries: retention removes a
whole prefix of old entries and appends an entry saying which (`removed_through`), which
`verify` requires before accepting a chain that does not start at the genesis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEntry, utcnow

GENESIS = "0" * 64
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock appends take.
CHAIN_LOCK = 0x1AC_A0D1
RETENTION = "audit.retention"


def digest(prev_hash: str, at: datetime, token_id: int | None, actor: str, source: str,
           action: str, target: str, result: str) -> str:  # fmt: skip
    fields = [prev_hash, at.isoformat(timespec="microseconds"), token_id, actor, source,
              action, target, result]  # fmt: skip
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    result: str = "",
    source: str = "",
    token_id: int | None = None,
) -> AuditEntry:
    """Add an entry at the end of the chain, in `session`'s transaction."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    prev = await session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    at = utcnow()
    fields = (token_id, actor[:128], source[:64], action[:160], target[:255], result[:2000])
    entry = AuditEntry(
        at=at,
        token_id=fields[0],
        actor=fields[1],
        source=fields[2],
        action=fields[3],
        target=fields[4],
        result=fields[5],
        prev_hash=prev or GENESIS,
        hash=digest(prev or GENESIS, at, *fields),
    )
    session.add(entry)
    await session.flush()
    return entry


@dataclass
class Verdict:
    entries: int
    broken_at: int | None = None  # the id of the first entry that does not hold
    reason: str = ""
    # The newest entry's id and hash: kept outside the database (a monitor, a ticket), they
    # show a chain cut short or rewritten whole, which no walk of the chain itself can.
    head_id: int = 0
    head: str = GENESIS

    @property
    def ok(self) -> bool:
        return self.broken_at is None


async def _in_order(session: AsyncSession) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(1000)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].id


async def verify(session: AsyncSession) -> Verdict:
    """Walk the chain from its first entry; the first entry that does not hold, and why."""
    count = 0
    prev: AuditEntry | None = None
    first_id = 0
    removed_through = 0
    async for row in _in_order(session):
        count += 1
        fields = (row.token_id, row.actor, row.source, row.action, row.target, row.result)
        if row.hash != digest(row.prev_hash, row.at, *fields):
            return Verdict(count, row.id, "its content does not match its hash (edited)")
        if prev is None:
            first_id = row.id  # after 1: a prefix removed by retention, checked below
            if first_id == 1 and row.prev_hash != GENESIS:
                return Verdict(count, row.id, "the first entry does not start the chain")
        elif row.prev_hash != prev.hash:
            return Verdict(
                count,
                row.id,
                f"its link to entry {prev.id} is broken (an entry between them was removed, "
                "or one was edited)",
            )
        if row.action == RETENTION:
            removed_through = max(removed_through, json.loads(row.target or "{}").get("to", 0))
        prev = row
    if first_id > 1 and removed_through < first_id - 1:
        return Verdict(
            count,
            first_id,
            f"entries before {first_id} are gone and no retention entry says it removed them",
        )
    if prev is None:
        return Verdict(count)
    return Verdict(count, head_id=prev.id, head=prev.hash)


async def apply_retention(session: AsyncSession, days: float) -> int:
    """Remove the entries older than `days` (a whole prefix) and record that: how many."""
    cutoff = utcnow() - timedelta(days=days)
    last_old = await session.scalar(select(func.max(AuditEntry.id)).where(AuditEntry.at < cutoff))
    if last_old is None:
        return 0
    # Never the newest entry: the chain goes on from it.
    newest = await session.scalar(select(func.max(AuditEntry.id)))
    last_old = min(last_old, (newest or 1) - 1)
    if last_old < 1:
        return 0
    first = await session.scalar(select(func.min(AuditEntry.id)))
    result = await session.execute(delete(AuditEntry).where(AuditEntry.id <= last_old))
    removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    await append(
        session,
        actor="system",
        action=RETENTION,
        target=json.dumps({"from": first, "to": last_old}),
        result=f"removed {removed} entries older than {days:g} days (IAC_AUDIT_RETENTION_DAYS)",
    )
    return removed


async def search(
    session: AsyncSession,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    """Entries after `after_id`, oldest first, matching every filter given (`action` and
    `target`: a substring)."""
    query = select(AuditEntry).where(AuditEntry.id > after_id)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action.contains(action, autoescape=True))
    if target:
        query = query.where(AuditEntry.target.contains(target, autoescape=True))
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    return (await session.scalars(query.order_by(AuditEntry.id).limit(limit))).all()
