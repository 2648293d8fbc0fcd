"""Drift verdicts as the store records them, on SQLite and PostgreSQL: the newest check
wins (an older one ending late only joins the history), events are sent when the verdict
changes and not at every check that says the same, a run of a drift check sends no run.*
event, the history is capped, and the fleet view's order."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.db import Database
from backend.models import (
    DriftCheck,
    DriftStatus,
    NotificationDestination,
    NotificationEvent,
    Run,
)
from backend.store import deployments, drift, runs
from tests.backend.helpers import new_deployment, upload

pytestmark = pytest.mark.anyio
EVERY_EVENT = [
    "run.created",
    "run.succeeded",
    "run.failed",
    "drift.detected",
    "drift.check_failed",
]


async def listened_deployment(client: httpx.AsyncClient, db: Database) -> None:
    """Deployment web, with a configuration, and a destination that wants every event."""
    await new_deployment(client, "web")
    assert (await upload(client, "web")).status_code == 201
    async with db.session() as s:
        s.add(
            NotificationDestination(
                name="all", kind="webhook", url_encrypted=b"-", url_host="-", events=EVERY_EVENT
            )
        )


async def drift_run(db: Database, name: str = "web") -> Run:
    async with db.session() as s:
        dep = await deployments.get_deployment(s, name)
        run = await runs.create_run(s, dep, "drift")
        s.expunge(run)
        return run


async def verdict(db: Database, run: Run, status: DriftStatus, **detail: Any) -> None:
    async with db.session() as s:
        await drift.record(s, run, status, {"resources": [], "outputs": [], **detail})


async def events(db: Database) -> list[str]:
    async with db.session() as s:
        rows = await s.scalars(select(NotificationEvent.kind).order_by(NotificationEvent.id))
        return list(rows)


async def test_verdicts_history_and_events(client: httpx.AsyncClient, db: Database) -> None:
    await listened_deployment(client, db)
    first, second, third = [await drift_run(db) for _ in range(3)]
    assert await events(db) == []  # a drift check's run sends no run.* event

    await verdict(db, first, DriftStatus.IN_SYNC)
    await verdict(db, second, DriftStatus.DRIFTED, outputs=["colour"])
    await verdict(db, first, DriftStatus.DRIFTED, outputs=["colour"])  # older, ends late
    state = (await client.get("/api/v1/deployments/web/drift")).json()
    assert state["status"] == "drifted" and state["run_id"] == second.id
    assert [c["run_id"] for c in state["history"]] == [first.id, second.id, first.id]
    assert await events(db) == ["drift.detected"]

    # The same drift again: no new event; something else drifted: one more.
    await verdict(db, third, DriftStatus.DRIFTED, outputs=["colour"])
    assert await events(db) == ["drift.detected"]
    fourth = await drift_run(db)
    await verdict(db, fourth, DriftStatus.DRIFTED, outputs=["colour", "size"])
    assert await events(db) == ["drift.detected", "drift.detected"]

    # Failing checks: one event when they start failing.
    for _ in range(2):
        await verdict(db, await drift_run(db), DriftStatus.CHECK_FAILED, reason="plan: exit 1")
    assert await events(db) == ["drift.detected", "drift.detected", "drift.check_failed"]
    async with db.session() as s:
        payload = (
            await s.scalars(select(NotificationEvent.payload).order_by(NotificationEvent.id))
        ).all()
    assert payload[1]["drift"] == {
        "status": "drifted",
        "resources": [],
        "outputs": ["colour", "size"],
    }
    assert payload[1]["deployment"] == {"name": "web"}
    assert payload[1]["run"]["path"] == f"/runs/{fourth.id}"

    # The history keeps the newest checks only.
    for _ in range(drift.HISTORY + 3):
        await verdict(db, await drift_run(db), DriftStatus.IN_SYNC)
    async with db.session() as s:
        kept = await s.scalar(select(func.count()).select_from(DriftCheck))
    assert kept == drift.HISTORY


async def test_the_fleet_puts_what_needs_someone_first(
    client: httpx.AsyncClient, db: Database
) -> None:
    for name in ("d-sync", "c-failed", "b-unknown", "a-drifted"):
        await new_deployment(client, name)
        assert (await upload(client, name)).status_code == 201
    await verdict(db, await drift_run(db, "d-sync"), DriftStatus.IN_SYNC)
    await verdict(db, await drift_run(db, "c-failed"), DriftStatus.CHECK_FAILED, reason="x")
    await verdict(db, await drift_run(db, "a-drifted"), DriftStatus.DRIFTED, outputs=["o"])
    fleet = (await client.get("/api/v1/drift")).json()
    assert [(d["deployment"], d["status"]) for d in fleet] == [
        ("a-drifted", "drifted"),
        ("c-failed", "check_failed"),
        ("b-unknown", "unknown"),
        ("d-sync", "in_sync"),
    ]
    assert fleet[0]["detail"]["outputs"] == ["o"]
    assert fleet[1]["detail"]["reason"] == "x"


async def test_checks_ending_out_of_order_notify_by_the_verdict_that_stands(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Checks a < b < c: b says in_sync, a ends late saying drifted (history only), then c
    says drifted: the deployment went from in_sync to drifted, which is news."""
    await listened_deployment(client, db)
    a, b, c = [await drift_run(db) for _ in range(3)]
    await verdict(db, b, DriftStatus.IN_SYNC)
    await verdict(db, a, DriftStatus.DRIFTED, outputs=["colour"])
    assert await events(db) == []
    state = (await client.get("/api/v1/deployments/web/drift")).json()
    assert state["status"] == "in_sync" and state["run_id"] == b.id
    await verdict(db, c, DriftStatus.DRIFTED, outputs=["colour"])
    assert await events(db) == ["drift.detected"]
