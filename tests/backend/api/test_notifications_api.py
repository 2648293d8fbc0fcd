"""Notification destinations through the API, on SQLite and PostgreSQL, with the backend's
own delivery worker sending to a real receiver on loopback: the secret shown once, the URL
never, the guard at save time, roles and scopes, the test action, and the events of runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from backend.access import Role
from backend.app import create_app, prepare
from backend.config import Settings
from backend.crypto import SecretsUnreadable
from backend.db import Database
from backend.models import DeliveryAttempt, NotificationDelivery, NotificationDestination
from backend.store import notifications as store
from tests.backend.api.test_access import make_token
from tests.backend.conftest import API_TOKEN, make_settings
from tests.backend.helpers import new_deployment, upload
from tests.backend.receiver import Receiver, signature_ok

pytestmark = pytest.mark.anyio
PUBLIC = "https://iac.example.com"
API = "/api/v1/notifications/destinations"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        notify_allow="127.0.0.1",
        notify_poll_interval=0.05,
        public_url=PUBLIC,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def client_of(app: FastAPI, token: str = API_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    )


async def add(client: httpx.AsyncClient, name: str, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(API, json={"name": name, "url": url, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(client: httpx.AsyncClient, destination: int) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/{destination}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json())


async def settled(
    client: httpx.AsyncClient, destination: int, count: int = 1, timeout: float = 20
) -> list[dict[str, Any]]:
    """The destination's deliveries once `count` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        listed = await deliveries(client, destination)
        if sum(d["status"] != "pending" for d in listed) >= count:
            return listed
        assert time.monotonic() < deadline, f"deliveries still pending: {listed}"
        await asyncio.sleep(0.02)


async def test_the_secret_is_shown_once_and_the_url_never(
    client: httpx.AsyncClient, db: Database, receiver: Receiver
) -> None:
    url = receiver.url("/services/T000/B000/credential-in-the-path")
    created = await add(client, "ops", url)
    secret = created["secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    assert created["url_host"] == f"127.0.0.1:{receiver.port}"
    assert created["kind"] == "webhook" and created["signed"] is True
    assert created["deployment"] is None and created["enabled"] is True
    assert created["events"] == [
        "run.created", "run.awaiting_approval", "run.succeeded", "run.failed",
        "run.canceled", "drift.detected", "drift.check_failed",
    ]  # fmt: skip
    for response in (
        await client.get(API),
        await client.get(f"{API}/{created['id']}"),
        await client.patch(f"{API}/{created['id']}", json={"enabled": True}),
    ):
        assert response.status_code == 200, response.text
        assert "credential-in-the-path" not in response.text and secret not in response.text
        body = response.json()
        assert all("secret" not in d for d in (body if isinstance(body, list) else [body]))
    async with db.session() as s:
        row = await s.scalar(select(NotificationDestination))
        assert row is not None
        assert b"credential-in-the-path" not in row.url_encrypted
        assert row.secret_encrypted is not None and secret.encode() not in row.secret_encrypted
    # A secret of one's own; none for Slack, which checks no signature.
    given = await add(client, "own", url, secret="a-long-enough-secret")
    assert given["secret"] == "a-long-enough-secret"
    slack = await add(client, "chat", url, kind="slack")
    assert slack["secret"] is None and slack["signed"] is False
    refused = await client.post(
        API, json={"name": "chat2", "url": url, "kind": "slack", "secret": "x" * 20}
    )
    assert refused.status_code == 422 and "Slack destination is not signed" in refused.text
    taken = await client.post(API, json={"name": "ops", "url": url})
    assert taken.status_code == 409 and "exists already" in taken.json()["detail"]


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"events": ["run.exploded"]}, 422, "unknown event 'run.exploded'"),
        ({"events": ["test"]}, 422, "unknown event 'test'"),
        ({"events": []}, 422, "at least one event"),
        ({"kind": "email"}, 422, "body field 'kind'"),
        ({"secret": "short"}, 422, "16 to 256 characters"),
        ({"name": "bad name"}, 422, "destination name 'bad name' is invalid"),
        ({"url": "ftp://127.0.0.1/x"}, 422, "must be http:// or https://"),
        ({"url": "http://user:pw@127.0.0.1/x"}, 422, "may not hold a user or password"),
        ({"url": "http://127.0.0.2:9/x"}, 400, "127.0.0.2 a loopback address"),
        ({"url": "http://169.254.169.254/latest"}, 400, "169.254.169.254 a link-local address"),
        ({"url": "http://[::1]:9/"}, 400, "::1 a loopback address"),
        ({"url": "http://10.1.1.1/"}, 400, "a private address"),
        ({"url": "http://[64:ff9b::a9fe:a9fe]/"}, 400, "a link-local address"),
        ({"url": "http://[fd00:ec2::254]/"}, 400, "a cloud metadata address"),
        ({"url": "http://100.100.100.200/"}, 400, "a cloud metadata address"),
        (
            {"url": f"http://{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}.{'e' * 60}/"},
            422,
            "host is 304 characters",
        ),
        ({"deployment": "nope"}, 404, "deployment 'nope' does not exist"),
    ],
)
async def test_bad_destinations_are_refused_with_the_reason(
    client: httpx.AsyncClient, fields: dict[str, Any], status: int, message: str
) -> None:
    body = {"name": "d", "url": "http://127.0.0.1:9/hook", **fields}
    response = await client.post(API, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()
    assert (await client.get(API)).json() == [], "nothing half-written"


async def test_without_the_allowlist_loopback_is_refused_at_save(
    db_url: str, tmp_path: Path
) -> None:
    app = create_app(make_settings(db_url, tmp_path / "strict"))
    async with app.router.lifespan_context(app), client_of(app) as client:
        for url, reason in [
            ("http://127.0.0.1:9/", "127.0.0.1 a loopback address"),
            ("http://localhost:9/", "a loopback address"),
            ("http://169.254.169.254/", "a link-local address"),
        ]:
            response = await client.post(API, json={"name": "x", "url": url})
            assert response.status_code == 400, response.text
            detail = response.json()["detail"]
            assert detail.startswith("destination URL refused: ") and reason in detail, detail
            assert "IAC_NOTIFY_ALLOW" in detail


async def test_roles_and_scopes(
    app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    for name, team in (("web", "a"), ("other", "b")):
        await new_deployment(client, name, labels={"team": team})
    team_a = {"names": [], "labels": {"team": "a"}}
    admin_a = await make_token(client, "admin-a", Role.ADMIN, team_a)
    viewer_a = await make_token(client, "viewer-a", Role.VIEWER, team_a)
    operator = await make_token(client, "operator", Role.OPERATOR, None)
    everywhere = await add(client, "everywhere", receiver.url())
    other = await add(client, "other-team", receiver.url(), deployment="other")
    async with client_of(app, admin_a) as scoped:
        refused = await scoped.post(API, json={"name": "g", "url": receiver.url()})
        assert refused.status_code == 403 and "needs an unscoped admin" in refused.text
        hidden = await scoped.post(
            API, json={"name": "o", "url": receiver.url(), "deployment": "other"}
        )
        assert hidden.status_code == 404
        mine = await add(scoped, "team-a", receiver.url(), deployment="web")
        assert mine["deployment"] == "web" and mine["secret"]
        # A global destination and another team's do not exist for it.
        for destination in (everywhere, other):
            for method in ("GET", "PATCH", "DELETE"):
                response = await scoped.request(
                    method, f"{API}/{destination['id']}", json={} if method == "PATCH" else None
                )
                assert response.status_code == 404, (method, response.text)
            assert (await scoped.post(f"{API}/{destination['id']}/test")).status_code == 404
        assert [d["name"] for d in (await scoped.get(API)).json()] == ["team-a"]
    async with client_of(app, viewer_a) as viewer:
        assert [d["name"] for d in (await viewer.get(API)).json()] == ["team-a"]
        assert (await viewer.get(f"{API}/{mine['id']}/deliveries")).status_code == 200
        assert (await viewer.post(f"{API}/{mine['id']}/test")).status_code == 403
        assert (await viewer.delete(f"{API}/{mine['id']}")).status_code == 403
    async with client_of(app, operator) as unscoped:
        names = [d["name"] for d in (await unscoped.get(API)).json()]
        assert names == ["everywhere", "other-team", "team-a"]
        refused = await unscoped.post(API, json={"name": "x", "url": receiver.url()})
        assert refused.status_code == 403


async def test_a_test_is_delivered_signed_and_listed_with_its_attempt(
    client: httpx.AsyncClient, db: Database, receiver: Receiver
) -> None:
    created = await add(client, "ops", receiver.url(), events=["run.failed"])
    sent = await client.post(f"{API}/{created['id']}/test")
    assert sent.status_code == 202, sent.text
    delivery_id = sent.json()["delivery_id"]
    (got,) = await receiver.until(lambda r: len(r) == 1)
    assert got.path == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-iac-event"] == "test"
    assert got.delivery == delivery_id
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert signature_ok(created["secret"], got)
    assert not signature_ok("another-secret-altogether", got)
    body = got.json()
    assert body["event"] == "test" and body["delivery_id"] == delivery_id
    assert body["destination"] == {"name": "ops"}
    assert body["url"] == f"{PUBLIC}/notifications"
    (one,) = await settled(client, created["id"])  # the receiver answered; the record follows
    assert one["id"] == delivery_id and one["event"] == "test" and one["status"] == "delivered"
    assert one["attempts"] == 1 and one["delivered_at"] and one["last_error"] == ""
    (attempt,) = one["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["error"] == ""
    assert attempt["duration_ms"] >= 0 and attempt["backend_id"]
    shown = (await client.get(f"{API}/{created['id']}")).json()["deliveries"]
    assert shown == {"pending": 0, "delivered": 1, "failed": 0}
    # A disabled destination is sent nothing, not even a test.
    off = await client.patch(f"{API}/{created['id']}", json={"enabled": False})
    assert off.json()["enabled"] is False
    refused = await client.post(f"{API}/{created['id']}/test")
    assert refused.status_code == 409 and "is disabled" in refused.text
    # Removing it takes its deliveries and their attempts along.
    assert (await client.delete(f"{API}/{created['id']}")).status_code == 204
    assert (await client.get(f"{API}/{created['id']}")).status_code == 404
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(NotificationDelivery)) == 0
        assert await s.scalar(select(func.count()).select_from(DeliveryAttempt)) == 0


async def test_removing_a_destination_with_deliveries_waiting_needs_force(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Its waiting deliveries would never be sent: refused, with the way to keep them,
    until force=true says so."""
    created = await add(client, "down", "http://127.0.0.1:9/nobody-listens")
    assert (await client.post(f"{API}/{created['id']}/test")).status_code == 202
    refused = await client.delete(f"{API}/{created['id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        "notification destination 'down' has 1 delivery waiting to be sent, which removing "
        "it would drop: disable it to keep them (enabled=false), or remove it with force=true"
    )
    assert (await client.get(f"{API}/{created['id']}")).json()["deliveries"]["pending"] == 1
    forced = await client.delete(f"{API}/{created['id']}", params={"force": "true"})
    assert forced.status_code == 204, forced.text
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(NotificationDelivery)) == 0


async def test_the_events_of_runs_reach_the_destinations_that_want_them(
    app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await app.state.engine.stop()  # no runner: the runs stay queued until canceled
    for name in ("web", "other"):
        await new_deployment(client, name)
        assert (await upload(client, name)).status_code == 201
    everything = await add(client, "all", receiver.url("/all"))
    ending = await add(client, "ending", receiver.url("/ending"), events=["run.canceled"])
    await add(client, "other-only", receiver.url("/other"), deployment="other")
    run = (
        await client.post("/api/v1/runs", json={"deployment": "web", "operation": "plan"})
    ).json()
    canceled = await client.post(f"/api/v1/runs/{run['id']}/cancel", json={"comment": "no"})
    assert canceled.status_code == 200, canceled.text
    got = await receiver.until(lambda r: len(r) == 3)
    by_path = sorted((r.path, r.headers["x-iac-event"]) for r in got)
    assert by_path == [
        ("/all", "run.canceled"), ("/all", "run.created"), ("/ending", "run.canceled")
    ]  # fmt: skip
    created = next(r.json() for r in got if r.headers["x-iac-event"] == "run.created")
    assert created["deployment"] == {"name": "web"}
    assert created["run"]["id"] == run["id"] and created["run"]["operation"] == "plan"
    assert created["run"]["status"] == "queued"
    assert created["run"]["created_by"] == "bootstrap (IAC_API_TOKEN)"
    assert created["url"] == f"{PUBLIC}/runs/{run['id']}"
    assert created["run"]["path"] == f"/runs/{run['id']}"
    ended = next(r.json() for r in got if r.path == "/ending")
    assert ended["run"]["status"] == "canceled"
    recorded = await deliveries(client, everything["id"]) + await deliveries(client, ending["id"])
    assert {r.delivery for r in got} == {d["id"] for d in recorded}


async def test_destinations_need_the_encryption_key(db_url: str, tmp_path: Path) -> None:
    keyless = make_settings(
        db_url, tmp_path / "keyless", encryption_key=None, notify_allow="127.0.0.1"
    )
    app = create_app(keyless)
    async with app.router.lifespan_context(app), client_of(app) as client:
        response = await client.post(API, json={"name": "x", "url": "http://127.0.0.1:9/"})
        assert response.status_code == 422, response.text
        assert "storing a notification URL needs ENCRYPTION_KEY" in response.json()["detail"]
    database, cipher = await prepare(make_settings(db_url, tmp_path / "keyed"))
    try:
        async with database.session() as session:
            spec = store.DestinationSpec("x", "webhook", "http://127.0.0.1:9/", "127.0.0.1:9")
            await store.create_destination(session, cipher, spec)
    finally:
        await database.dispose()
    with pytest.raises(SecretsUnreadable, match="encrypted notification destinations"):
        await prepare(keyless)
