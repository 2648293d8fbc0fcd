"""Notification destinations: create (the URL checked by the outbound guard, a webhook's
signing secret shown once), list, show, turn on or off, change events, remove, send a
test, and read their deliveries with each attempt.

Admins change destinations: a global one (every deployment's events) needs an unscoped
admin, a deployment's one an admin whose scope covers the deployment. Viewers read what
their scope covers (`backend.store.notifications`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, status

from backend.access import Role
from backend.api.deps import (
    CipherDep,
    IdPath,
    SessionDep,
    SettingsDep,
    TokenDep,
    needs,
    scope_of,
)
from backend.api.routing import CheckedRoute
from backend.errors import Conflict, Forbidden
from backend.models import NotifyEvent
from backend.notify import guard
from backend.schemas.notifications import (
    AttemptOut,
    DeliveryOut,
    DestinationCreate,
    DestinationCreated,
    DestinationOut,
    DestinationUpdate,
    SentTest,
)
from backend.store import deployments, outbox
from backend.store import notifications as store
from backend.store.notifications import DestinationSpec, DestinationView

router = APIRouter(prefix="/notifications", tags=["notifications"], route_class=CheckedRoute)


def destination_out(view: DestinationView) -> DestinationOut:
    row = view.row
    return DestinationOut(
        id=row.id,
        name=row.name,
        kind=row.kind,
        url_host=row.url_host,
        deployment=view.deployment,
        events=list(row.events or []),
        enabled=row.enabled,
        signed=row.secret_encrypted is not None,
        deliveries=dict(view.counts),
        created_at=row.created_at,
    )


def wake_notifier(request: Request) -> None:
    """Look for due deliveries now (after the request's commit), not at the next poll."""
    notifier = getattr(request.app.state, "notifier", None)
    if notifier is not None:
        notifier.wake()


@router.post("/destinations", status_code=status.HTTP_201_CREATED, **needs(Role.ADMIN))
async def create_destination(
    body: DestinationCreate,
    session: SessionDep,
    cipher: CipherDep,
    settings: SettingsDep,
    token: TokenDep,
) -> DestinationCreated:
    """A destination for every deployment's events (unscoped admins) or one deployment's.
    Its URL must resolve to addresses notifications may reach (400 says why not)."""
    # Resolved before the request reads the database: a slow name server holds no
    # transaction open.
    target = guard.parse_url(body.url)
    policy = guard.Policy.of(settings.notify_allow, settings.notify_allow_private)
    try:
        await guard.resolve(target, policy, timeout=settings.notify_timeout)
    except guard.Refused as exc:
        raise HTTPException(400, f"destination URL refused: {exc}") from None
    scope = scope_of(token)
    deployment_id = None
    deployment_name = None
    if body.deployment is None:
        if not scope.unscoped:
            raise Forbidden(
                f"a destination for every deployment needs an unscoped admin token; token "
                f"{token.name!r} is limited to {scope.describe()}: name a deployment"
            )
    else:
        found = await deployments.get_deployment(session, body.deployment, scope=scope)
        deployment_id, deployment_name = found.id, found.name
    spec = DestinationSpec(
        name=body.name,
        kind=body.kind,
        url=body.url,
        url_host=target.host_header,
        events=body.events,
        deployment_id=deployment_id,
        secret=body.secret,
    )
    row, secret = await store.create_destination(session, cipher, spec)
    view = DestinationView(row, deployment_name, counts={"pending": 0, "delivered": 0, "failed": 0})
    return DestinationCreated(**destination_out(view).model_dump(), secret=secret)


@router.get("/destinations", **needs(Role.VIEWER))
async def list_destinations(session: SessionDep, token: TokenDep) -> list[DestinationOut]:
    """The destinations the token's scope covers (a global one: unscoped tokens only)."""
    return [destination_out(v) for v in await store.list_destinations(session, scope_of(token))]


@router.get("/destinations/{destination_id}", **needs(Role.VIEWER))
async def get_destination(
    destination_id: IdPath, session: SessionDep, token: TokenDep
) -> DestinationOut:
    return destination_out(await store.get_destination(session, destination_id, scope_of(token)))


@router.patch("/destinations/{destination_id}", **needs(Role.ADMIN))
async def update_destination(
    destination_id: IdPath, body: DestinationUpdate, session: SessionDep, token: TokenDep
) -> DestinationOut:
    """Turn it on or off, or change its events. A disabled destination gets no new events,
    and what it had pending waits until it is enabled again."""
    view = await store.update_destination(
        session, destination_id, scope_of(token), enabled=body.enabled, events=body.events
    )
    return destination_out(view)


@router.delete(
    "/destinations/{destination_id}", status_code=status.HTTP_204_NO_CONTENT, **needs(Role.ADMIN)
)
async def delete_destination(
    destination_id: IdPath,
    session: SessionDep,
    token: TokenDep,
    force: Annotated[
        bool, Query(description="Remove it although deliveries still wait to be sent.")
    ] = False,
) -> None:
    """Remove it with its deliveries and their attempts: refused (409) while deliveries
    wait to be sent, unless force=true (disable it to keep them)."""
    await store.delete_destination(session, destination_id, scope_of(token), force=force)


@router.post(
    "/destinations/{destination_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    **needs(Role.ADMIN),
)
async def send_test(
    destination_id: IdPath,
    session: SessionDep,
    token: TokenDep,
    request: Request,
    background: BackgroundTasks,
) -> SentTest:
    """Record a `test` event for this destination alone; the delivery worker sends it as
    any other (follow it with /deliveries)."""
    view = await store.get_destination(session, destination_id, scope_of(token))
    if not view.row.enabled:
        raise Conflict(
            f"notification destination {view.row.name!r} is disabled: enable it to send a test"
        )
    payload: dict[str, object] = {
        "destination": {"name": view.row.name},
        "message": f"a test notification from iac-runner, sent by {token.name}",
        "path": "/notifications",
    }
    if view.deployment is not None:
        payload["deployment"] = {"name": view.deployment}
    event = await outbox.record(
        session, NotifyEvent.TEST, payload, [view.row.id], view.row.deployment_id
    )
    delivery_id = await store.delivery_of(session, event.id, view.row.id)
    background.add_task(wake_notifier, request)
    return SentTest(delivery_id=delivery_id, event_id=event.id)


@router.get("/destinations/{destination_id}/deliveries", **needs(Role.VIEWER))
async def list_deliveries(
    destination_id: IdPath,
    session: SessionDep,
    token: TokenDep,
    limit: Annotated[int, Query(ge=1, le=500, description="How many, newest first.")] = 50,
) -> list[DeliveryOut]:
    """The destination's latest deliveries, newest first, with each attempt."""
    await store.get_destination(session, destination_id, scope_of(token))
    return [
        DeliveryOut(
            id=v.delivery.id,
            event=v.event,
            event_id=v.event_id,
            run_id=v.run_id,
            status=v.delivery.status,
            attempts=v.delivery.attempts,
            next_attempt_at=v.delivery.next_attempt_at if v.delivery.status == "pending" else None,
            delivered_at=v.delivery.delivered_at,
            last_error=v.delivery.last_error,
            created_at=v.delivery.created_at,
            attempt_log=[AttemptOut.model_validate(a) for a in v.attempts],
        )
        for v in await store.list_deliveries(session, destination_id, limit)
    ]
