"""The delivery worker's side of the outbox: claiming due deliveries, reading what to send,
and recording each attempt's outcome.

A claim is one conditional UPDATE (pending, due, and no live claim of another backend) that
names the backend and the end of its lease; PostgreSQL re-checks the condition on a row
another transaction changed meanwhile, SQLite runs one writer at a time, so however many
backends look at once, each delivery is claimed by one. The outcome is recorded only if
the claim still holds (same backend, same lease): a backend that paused past its lease
finds its write refused, and a delivered delivery is never claimed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher, DecryptionFailed
from backend.models import (
    DeliveryAttempt,
    DeliveryStatus,
    NotificationDelivery,
    NotificationDestination,
    NotificationEvent,
    utcnow,
)
from backend.store.clock import db_now

Delivery = NotificationDelivery
PENDING = DeliveryStatus.PENDING.value
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Due:
    """One claimed delivery, with what sending it needs (secrets decrypted)."""

    delivery_id: int
    claimed_until: datetime
    attempts: int  # made before this one
    event: str
    payload: dict[str, Any]
    kind: str
    url: str
    secret: str | None
    problem: str = ""  # why it cannot be sent (a secret that does not decrypt)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    duration_ms: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.status_code is not None and 200 <= self.status_code < 300


def _claimable(session: AsyncSession) -> list[Any]:
    now = db_now(session)
    return [
        Delivery.status == PENDING,
        Delivery.next_attempt_at <= now,
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
    ]


async def release_own(session: AsyncSession, backend_id: str) -> int:
    """At start: the claims an earlier life of this backend left (its lease would keep
    them from everyone for a while)."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.claimed_by == backend_id, Delivery.status == PENDING)
        .values(claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def claim(
    session: AsyncSession, backend_id: str, lease: float, limit: int
) -> tuple[list[int], datetime]:
    """Claim up to `limit` due deliveries of enabled destinations, oldest due first; their
    ids and the end of the lease (on the database's clock, as every backend reads it)."""
    candidates = list(
        await session.scalars(
            select(Delivery.id)
            .join(NotificationDestination, NotificationDestination.id == Delivery.destination_id)
            .where(*_claimable(session), NotificationDestination.enabled.is_(True))
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
    )
    if not candidates:
        return [], utcnow()
    claimed = (
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(candidates), *_claimable(session))
            .values(claimed_by=backend_id, claimed_until=db_now(session, lease))
            .returning(Delivery.id, Delivery.claimed_until)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not claimed:
        return [], utcnow()
    return sorted(row.id for row in claimed), claimed[0].claimed_until


async def load(session: AsyncSession, cipher: Cipher, ids: list[int], until: datetime) -> list[Due]:
    """What sending each claimed delivery needs."""
    rows = await session.execute(
        select(Delivery, NotificationEvent, NotificationDestination)
        .join(NotificationEvent, NotificationEvent.id == Delivery.event_id)
        .join(NotificationDestination, NotificationDestination.id == Delivery.destination_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    out = []
    for delivery, event, destination in rows:
        url, secret, problem = "", None, ""
        try:
            url = cipher.decrypt(destination.url_encrypted)
            if destination.secret_encrypted is not None:
                secret = cipher.decrypt(destination.secret_encrypted)
        except DecryptionFailed as exc:
            problem = f"the destination's URL or secret cannot be read: {exc}"
        out.append(
            Due(
                delivery.id,
                until,
                delivery.attempts,
                event.kind,
                dict(event.payload),
                destination.kind,
                url,
                secret,
                problem,
            )
        )
    return out


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt, after `attempts` failed ones: base, 2 base, 4
    base... up to `cap`."""
    return float(min(cap, base * 2 ** min(attempts - 1, 62)))


async def finish(
    session: AsyncSession,
    due: Due,
    outcome: Outcome,
    backend_id: str,
    *,
    max_attempts: int,
    base: float,
    cap: float,
) -> str | None:
    """Record the attempt and what follows from it: delivered, due again after a backoff,
    or failed for good. The new status; None when the claim was lost meanwhile (another
    backend's now, or the destination was removed): the attempt is kept if it can be."""
    now = utcnow()
    attempts = due.attempts + 1
    error = outcome.error[:MAX_ERROR_CHARS]
    values: dict[str, Any] = {
        "attempts": attempts,
        "claimed_by": None,
        "claimed_until": None,
        "last_error": error,
    }
    if outcome.ok:
        status = DeliveryStatus.DELIVERED.value
        values |= {"status": status, "delivered_at": now, "last_error": ""}
    elif attempts >= max_attempts:
        status = DeliveryStatus.FAILED.value
        values |= {"status": status}
    else:
        status = PENDING
        values |= {"next_attempt_at": db_now(session, backoff(attempts, base, cap))}
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.id == due.delivery_id,
            Delivery.status == PENDING,
            Delivery.claimed_by == backend_id,
            Delivery.claimed_until == due.claimed_until,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    held = bool(getattr(result, "rowcount", 0))
    if held or await session.scalar(select(exists().where(Delivery.id == due.delivery_id))):
        session.add(
            DeliveryAttempt(
                delivery_id=due.delivery_id,
                at=now,
                backend_id=backend_id,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=error,
            )
        )
        await session.flush()
    return status if held else None
