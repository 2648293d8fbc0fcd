"""The delivery worker against a real receiver, on SQLite and PostgreSQL: retries with
backoff until delivered (once) or out of attempts, no redirect followed, the URL guard at
delivery time, claims that keep two workers from sending one delivery twice, and what a
Slack destination reads."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from backend.config import Settings
from backend.crypto import Cipher
from backend.db import Database
from backend.models import DeliveryAttempt, NotificationDelivery, NotifyEvent, utcnow
from backend.notify import guard, payloads
from backend.notify.deliver import BATCH, Notifier, NotifyOptions
from backend.store import deliveries, outbox
from backend.store import notifications as store
from backend.store.deliveries import Outcome
from tests.backend.conftest import ENCRYPTION_KEY, make_settings
from tests.backend.receiver import Receiver, signature_ok

pytestmark = pytest.mark.anyio
API = "/api/v1/notifications/destinations"
MAX_ATTEMPTS = 6


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        tmp_path / "data",
        notify_allow="127.0.0.1",
        notify_poll_interval=0.05,
        notify_backoff=0.01,
        notify_backoff_max=0.2,
        notify_max_attempts=MAX_ATTEMPTS,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture
async def bare(db_url: str) -> AsyncIterator[Database]:
    """The database without a backend: the test runs the workers it wants."""
    database = Database(db_url)
    yield database
    await database.dispose()


def options(backend_id: str, policy: guard.Policy, **values: Any) -> NotifyOptions:
    return NotifyOptions(
        backend_id,
        "https://iac.example.com",
        policy,
        poll_interval=0.05,
        backoff=0.01,
        backoff_max=0.2,
        max_attempts=MAX_ATTEMPTS,
        **values,
    )


async def destination(database: Database, name: str, url: str, **fields: Any) -> int:
    """A destination stored as the API would (the guard's check at save left out)."""
    host = guard.parse_url(url).host_header
    spec = store.DestinationSpec(name=name, kind="webhook", url=url, url_host=host, **fields)
    async with database.session() as session:
        row, _ = await store.create_destination(session, Cipher(ENCRYPTION_KEY), spec)
        return row.id


async def record_tests(database: Database, destination_id: int, count: int = 1) -> None:
    async with database.session() as session:
        for i in range(count):
            await outbox.record(session, NotifyEvent.TEST, {"n": i}, [destination_id])


async def history(
    client: httpx.AsyncClient, destination_id: int, timeout: float = 30
) -> dict[str, Any]:
    """The destination's one delivery, once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        (delivery,) = (await client.get(f"{API}/{destination_id}/deliveries")).json()
        if delivery["status"] != "pending":
            return dict(delivery)
        assert time.monotonic() < deadline, delivery
        await asyncio.sleep(0.02)


async def test_five_failures_then_one_delivery(
    app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.answer(500, 503, 500, 502, 500)
    made = (await client.post(API, json={"name": "flaky", "url": receiver.url()})).json()
    sent = (await client.post(f"{API}/{made['id']}/test")).json()
    delivery = await history(client, made["id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 6
    codes = [a["status_code"] for a in delivery["attempt_log"]]
    assert codes == [500, 503, 500, 502, 500, 200]
    assert delivery["attempt_log"][0]["error"] == "HTTP 500: receiver says no"
    assert delivery["attempt_log"][-1]["error"] == "" and delivery["last_error"] == ""
    got = receiver.received
    assert len(got) == 6 and {r.delivery for r in got} == {sent["delivery_id"]}
    assert [r.status for r in got].count(200) == 1
    assert all(signature_ok(made["secret"], r) for r in got)
    # Each retry waited its backoff (0.01 s, doubled each time) after the previous one.
    times = [a["at"] for a in delivery["attempt_log"]]
    from datetime import datetime

    gaps = [
        (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
        for a, b in zip(times, times[1:], strict=False)
    ]
    assert all(gap >= 0.01 * 2**i for i, gap in enumerate(gaps)), gaps
    # Delivered is final: another pass claims nothing and the receiver hears no more.
    assert await app.state.notifier.deliver_due() == 0
    assert len(receiver.received) == 6


async def test_out_of_attempts_is_failed_for_good(
    app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.answer(*[500] * MAX_ATTEMPTS)
    made = (await client.post(API, json={"name": "down", "url": receiver.url()})).json()
    await client.post(f"{API}/{made['id']}/test")
    delivery = await history(client, made["id"])
    assert delivery["status"] == "failed" and delivery["attempts"] == MAX_ATTEMPTS
    assert delivery["last_error"] == "HTTP 500: receiver says no"
    assert len(delivery["attempt_log"]) == MAX_ATTEMPTS
    assert await app.state.notifier.deliver_due() == 0
    assert len(receiver.received) == MAX_ATTEMPTS


async def test_a_redirect_is_not_followed(client: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answer(302)
    made = (await client.post(API, json={"name": "moved", "url": receiver.url()})).json()
    await client.post(f"{API}/{made['id']}/test")
    delivery = await history(client, made["id"])
    first, second = delivery["attempt_log"]
    assert first["status_code"] == 302
    assert first["error"] == "HTTP 302: a redirect, which notifications do not follow"
    assert second["status_code"] == 200 and delivery["status"] == "delivered"
    assert [r.path for r in receiver.received] == ["/hook", "/hook"]  # never its Location


async def test_the_guard_refuses_at_delivery_time(bare: Database, receiver: Receiver) -> None:
    """Destinations stored while allowed (or whose name now resolves elsewhere) are refused
    by a worker whose policy does not allow them: nothing is sent."""
    local = await destination(bare, "local", f"http://localhost:{receiver.port}/hook")
    metadata = await destination(bare, "metadata", "http://169.254.169.254/latest/meta-data/")
    await record_tests(bare, local)
    await record_tests(bare, metadata)
    worker = Notifier(bare, Cipher(ENCRYPTION_KEY), options("strict", guard.Policy()))
    assert await worker.deliver_due() == 2
    async with bare.session() as session:
        errors = {
            d.destination_id: (d.status, d.attempts, d.last_error)
            for d in await session.scalars(select(NotificationDelivery))
        }
    assert errors[local][:2] == ("pending", 1)
    loopback = r"refused: localhost resolves to (127\.0\.0\.1|::1), a loopback address"
    assert re.match(loopback, errors[local][2]), errors
    assert errors[metadata][2].startswith("refused: 169.254.169.254 a link-local address")
    assert receiver.received == []
    # The same destination with the operator's allowlist is sent to.
    async with bare.session() as session:
        await session.execute(update(NotificationDelivery).values(next_attempt_at=utcnow()))
    allowed = Notifier(
        bare, Cipher(ENCRYPTION_KEY), options("allowed", guard.Policy.of("127.0.0.1"))
    )
    await allowed.deliver_due()
    assert len(receiver.received) == 1


async def test_two_workers_never_send_one_delivery_twice(
    bare: Database, receiver: Receiver
) -> None:
    target = await destination(bare, "shared", receiver.url())
    count = 3 * BATCH
    await record_tests(bare, target, count)
    cipher, policy = Cipher(ENCRYPTION_KEY), guard.Policy.of("127.0.0.1")
    workers = [Notifier(bare, cipher, options(f"backend-{i}", policy)) for i in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        got = await receiver.until(lambda r: len(r) >= count)
        async with bare.session() as session:
            while await session.scalar(
                select(NotificationDelivery.id).where(NotificationDelivery.status == "pending")
            ):
                await session.commit()
                await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(got) == count and len({r.delivery for r in got}) == count
    async with bare.session() as session:
        attempts = list(await session.scalars(select(DeliveryAttempt)))
    assert len(attempts) == count, [a.error for a in attempts if a.error][:5]
    assert len({a.delivery_id for a in attempts}) == count
    assert {a.backend_id for a in attempts} == {"backend-0", "backend-1"}  # both had work


async def test_an_outcome_counts_only_while_the_claim_holds(bare: Database) -> None:
    target = await destination(bare, "claims", "http://127.0.0.1:9/")
    await record_tests(bare, target)
    cipher = Cipher(ENCRYPTION_KEY)
    async with bare.session() as session:
        ids, until = await deliveries.claim(session, "first", 30, BATCH)
        assert len(ids) == 1
        assert (await deliveries.claim(session, "second", 30, BATCH))[0] == []  # held
        (first,) = await deliveries.load(session, cipher, ids, until)
    async with bare.session() as session:  # the first one's lease ran out meanwhile
        await session.execute(
            update(NotificationDelivery).values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    async with bare.session() as session:
        ids, until = await deliveries.claim(session, "second", 30, BATCH)
        (second,) = await deliveries.load(session, cipher, ids, until)

    async def finish(due: deliveries.Due, backend_id: str) -> str | None:
        return await deliveries.finish(
            session, due, Outcome(200, 5), backend_id, max_attempts=5, base=1.0, cap=10.0
        )

    async with bare.session() as session:
        assert await finish(first, "first") is None  # its attempt is kept, its outcome is not
        assert await finish(second, "second") == "delivered"
    async with bare.session() as session:
        row = await session.scalar(select(NotificationDelivery))
        assert row is not None and row.status == "delivered" and row.attempts == 1
        assert (await deliveries.claim(session, "third", 30, BATCH))[0] == []


def test_a_slack_message_reads_as_a_sentence() -> None:
    payload = {
        "event": "run.succeeded",
        "occurred_at": "2026-12-01T10:00:00+00:00",
        "deployment": {"name": "web"},
        "run": {
            "id": 7,
            "operation": "apply",
            "status": "succeeded",
            "created_by": "ci <bot>",
            "changes": {"add": 1, "change": 2, "destroy": 0, "replace": 0},
            "path": "/runs/7",
        },
    }
    message = payloads.slack_message(payload, 42, "https://iac.example.com")
    assert message["text"] == (
        ":white_check_mark: web: apply run 7 succeeded (1 to add, 2 to change, 0 to destroy) "
        "https://iac.example.com/runs/7"
    )
    head, fields, context = message["blocks"]
    assert head["text"]["text"] == (
        ":white_check_mark: *<https://iac.example.com/runs/7|web: apply run 7 succeeded>*"
    )
    assert [f["text"] for f in fields["fields"]] == [
        "*Deployment*\nweb",
        "*Run*\n<https://iac.example.com/runs/7|#7> (apply)",
        "*Status*\nsucceeded",
        "*Changes*\n1 to add, 2 to change, 0 to destroy",
    ]
    shown = context["elements"][0]["text"]
    assert "started by ci &lt;bot&gt;" in shown and "delivery 42" in shown
    awaiting = payloads.slack_message(
        {**payload, "event": "run.awaiting_approval"}, 1, "https://iac.example.com"
    )
    assert awaiting["text"].startswith(":hourglass_flowing_sand: web: apply run 7 awaits approval")


def test_the_documented_signature_check_refuses_forgeries_and_replays() -> None:
    """The README's `verified`, as written there (docs/notifications.md gives the same)."""
    import hashlib
    import hmac
    import time

    from tests.backend.receiver import ROOT, VERIFIED, documented_code

    assert documented_code(ROOT / "docs/notifications.md", "Verify a request") == (
        documented_code(ROOT / "README.md", "## Notifications")
    )
    body = b'{"event":"test"}'

    def signed(secret: str, at: int) -> dict[str, str]:
        mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        return {"X-Iac-Timestamp": str(at), "X-Iac-Signature": f"sha256={mac}"}

    now = int(time.time())
    assert VERIFIED("s" * 32, signed("s" * 32, now), body)
    assert not VERIFIED("s" * 32, signed("t" * 32, now), body)  # another key
    assert not VERIFIED("s" * 32, signed("s" * 32, now), body + b" ")  # another body
    assert not VERIFIED("s" * 32, signed("s" * 32, now - 3600), body)  # an old request
