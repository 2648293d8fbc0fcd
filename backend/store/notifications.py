"""Notification destinations (where events go: every deployment's, or one deployment's) and
the record of what was delivered to each.

A destination's URL (a Slack incoming webhook's URL is its credential) and a webhook's
signing secret are sealed with the cipher: the API shows the URL's host only, and the
secret once, in the answer that created it. The caller checks the URL with
`backend.notify.guard` before it is stored.

A global destination concerns every deployment, so only an unscoped token sees it; a
deployment's destinations are seen by the tokens whose scope covers the deployment.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.access import Scope
from backend.crypto import Cipher
from backend.errors import Conflict, Invalid, NotFound
from backend.models import (
    DeliveryAttempt,
    DeliveryStatus,
    Deployment,
    DestinationKind,
    NotificationDelivery,
    NotificationDestination,
    NotificationEvent,
    NotifyEvent,
)
from backend.store.validation import check_name, check_text

# What a destination may subscribe to: every event but the "send test" action's.
SUBSCRIBABLE = tuple(e.value for e in NotifyEvent if e is not NotifyEvent.TEST)
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 256


@dataclass(frozen=True)
class DestinationSpec:
    """What creating a destination takes (the URL already checked by the guard)."""

    name: str
    kind: str
    url: str
    url_host: str
    events: Sequence[str] | None = None  # None: every event
    deployment_id: int | None = None
    secret: str | None = None  # a webhook's; None: a random one


@dataclass(frozen=True)
class DestinationView:
    """A destination with what its visibility and its answer need."""

    row: NotificationDestination
    deployment: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # deliveries by status

    def visible_to(self, scope: Scope) -> bool:
        if self.deployment is None:
            return scope.unscoped
        return scope.covers(self.deployment, self.labels)


def check_events(events: Sequence[str] | None) -> list[str]:
    """The events asked for, each known and subscribable, in their canonical order (None:
    every one)."""
    if events is None:
        return list(SUBSCRIBABLE)
    unknown = [e for e in events if e not in SUBSCRIBABLE]
    if unknown:
        raise Invalid(
            f"unknown event {unknown[0]!r}: a destination may subscribe to "
            f"{', '.join(SUBSCRIBABLE)}"
        )
    if not events:
        raise Invalid("a destination subscribes to at least one event (omit events for all)")
    return [e for e in SUBSCRIBABLE if e in events]


def check_kind(kind: str) -> str:
    if kind not in {k.value for k in DestinationKind}:
        raise Invalid(f"destination kind {kind!r} is invalid: use 'webhook' or 'slack'")
    return kind


def _secret_for(kind: str, secret: str | None) -> str | None:
    if kind == DestinationKind.SLACK.value:
        if secret is not None:
            raise Invalid(
                "a Slack destination is not signed (Slack does not check signatures): "
                "give no secret"
            )
        return None
    if secret is None:
        return secrets.token_urlsafe(32)
    check_text(secret, "the signing secret")
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise Invalid(
            f"a signing secret is {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters "
            "(omit it for a random one)"
        )
    return secret


async def create_destination(
    session: AsyncSession, cipher: Cipher, spec: DestinationSpec
) -> tuple[NotificationDestination, str | None]:
    """Store a new destination; returns it and its signing secret in the clear (None for
    Slack), which is never shown again."""
    check_name(spec.name, "destination")
    kind = check_kind(spec.kind)
    events = check_events(spec.events)
    secret = _secret_for(kind, spec.secret)
    row = NotificationDestination(
        name=spec.name,
        kind=kind,
        url_encrypted=cipher.encrypt(spec.url, "a notification URL"),
        url_host=spec.url_host,
        secret_encrypted=cipher.encrypt(secret, "a signing secret") if secret else None,
        events=events,
        deployment_id=spec.deployment_id,
        enabled=True,
    )
    taken = Conflict(f"a notification destination named {spec.name!r} exists already")
    if await session.scalar(
        select(NotificationDestination.id).where(NotificationDestination.name == spec.name)
    ):
        raise taken
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise taken from None
    return row, secret


async def _counts(session: AsyncSession, ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {i: {s.value: 0 for s in DeliveryStatus} for i in ids}
    if not ids:
        return counts
    rows = await session.execute(
        select(NotificationDelivery.destination_id, NotificationDelivery.status, func.count())
        .where(NotificationDelivery.destination_id.in_(ids))
        .group_by(NotificationDelivery.destination_id, NotificationDelivery.status)
    )
    for destination_id, status, n in rows:
        counts[destination_id][status] = n
    return counts


async def _views(session: AsyncSession, *where: Any) -> list[DestinationView]:
    rows = (
        await session.execute(
            select(NotificationDestination, Deployment.name, Deployment.labels)
            .outerjoin(Deployment, Deployment.id == NotificationDestination.deployment_id)
            .where(*where)
            .order_by(NotificationDestination.name)
        )
    ).all()
    counts = await _counts(session, [row.id for row, _, _ in rows])
    return [
        DestinationView(row, name, dict(labels or {}), counts[row.id]) for row, name, labels in rows
    ]


async def list_destinations(session: AsyncSession, scope: Scope) -> list[DestinationView]:
    """The destinations `scope` sees, by name."""
    return [v for v in await _views(session) if v.visible_to(scope)]


async def get_destination(
    session: AsyncSession, destination_id: int, scope: Scope
) -> DestinationView:
    """The destination, if `scope` sees it (else NotFound, as for one that does not exist)."""
    views = await _views(session, NotificationDestination.id == destination_id)
    if not views or not views[0].visible_to(scope):
        raise NotFound(f"notification destination {destination_id} does not exist")
    return views[0]


async def update_destination(
    session: AsyncSession,
    destination_id: int,
    scope: Scope,
    *,
    enabled: bool | None = None,
    events: Sequence[str] | None = None,
) -> DestinationView:
    """Turn a destination on or off, or change its events (what is already recorded for
    it is delivered as it was)."""
    view = await get_destination(session, destination_id, scope)
    if events is not None:
        view.row.events = check_events(events)
    if enabled is not None:
        view.row.enabled = enabled
    await session.flush()
    return view


async def delete_destination(
    session: AsyncSession, destination_id: int, scope: Scope, *, force: bool = False
) -> None:
    """Remove a destination with its deliveries and their attempts. Refused (Conflict)
    while deliveries wait to be sent, unless `force`: disabling it keeps them instead."""
    view = await get_destination(session, destination_id, scope)
    # Locked first: an event recorded meanwhile waits, then finds it gone.
    await session.execute(
        select(NotificationDestination.id)
        .where(NotificationDestination.id == destination_id)
        .with_for_update()
    )
    pending = await session.scalar(
        select(func.count()).where(
            NotificationDelivery.destination_id == destination_id,
            NotificationDelivery.status == DeliveryStatus.PENDING.value,
        )
    )
    if pending and not force:
        raise Conflict(
            f"notification destination {view.row.name!r} has {pending} "
            f"{'delivery' if pending == 1 else 'deliveries'} waiting to be sent, which "
            "removing it would drop: disable it to keep them (enabled=false), or remove it "
            "with force=true"
        )
    await session.delete(view.row)
    await session.flush()


@dataclass(frozen=True)
class DeliveryView:
    delivery: NotificationDelivery
    event: str
    event_id: int
    run_id: int | None
    attempts: list[DeliveryAttempt]


async def list_deliveries(
    session: AsyncSession, destination_id: int, limit: int = 50
) -> list[DeliveryView]:
    """The destination's latest deliveries, newest first, each with its attempts."""
    rows = (
        await session.execute(
            select(NotificationDelivery, NotificationEvent.kind, NotificationEvent.run_id)
            .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
            .where(NotificationDelivery.destination_id == destination_id)
            .order_by(NotificationDelivery.id.desc())
            .limit(limit)
        )
    ).all()
    attempts: dict[int, list[DeliveryAttempt]] = {d.id: [] for d, _, _ in rows}
    if attempts:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(list(attempts)))
            .order_by(DeliveryAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [
        DeliveryView(delivery, kind, delivery.event_id, run_id, attempts[delivery.id])
        for delivery, kind, run_id in rows
    ]


async def delivery_of(session: AsyncSession, event_id: int, destination_id: int) -> int:
    """The id of the event's delivery to the destination."""
    found = await session.scalar(
        select(NotificationDelivery.id).where(
            NotificationDelivery.event_id == event_id,
            NotificationDelivery.destination_id == destination_id,
        )
    )
    if found is None:
        raise NotFound(f"event {event_id} has no delivery to destination {destination_id}")
    return found
