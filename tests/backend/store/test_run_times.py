"""A run's running time and waiting time (queued, awaiting approval), read from its history:
the approval wait is not running time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from backend.db import Database
from backend.models import RunEvent, RunStatus, utcnow
from backend.store import runs
from backend.store.runlist import RunTimes, run_times
from tests.backend.helpers import new_deployment, start_run, upload

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("events", "now", "expected"),
    [
        # queued 5 s, plan 10 s, ended
        ([(0, "queued"), (5, "dispatched"), (15, "succeeded")], 99, RunTimes(10, 5)),
        # plan 10 s, approval wait 100 s, apply queue 2 s, apply 20 s
        (
            [
                (0, "queued"),
                (5, "dispatched"),
                (15, "planned"),
                (115, "approved"),
                (117, "dispatched"),
                (137, "succeeded"),
            ],
            999,
            RunTimes(30, 107),
        ),
        # auto-approved: the plan's end to the apply's dispatch is a wait
        (
            [(0, "queued"), (1, "dispatched"), (3, "planned"), (4, "dispatched"), (9, "failed")],
            99,
            RunTimes(7, 2),
        ),
        # requeued (runner busy): back to waiting; state and cancel events change nothing
        (
            [
                (0, "queued"),
                (2, "dispatched"),
                (3, "requeued"),
                (10, "dispatched"),
                (11, "state_locked"),
                (12, "cancel_requested"),
                (20, "canceled"),
            ],
            99,
            RunTimes(11, 9),
        ),
        # still awaiting approval: counted up to now
        ([(0, "queued"), (1, "dispatched"), (4, "planned")], 60, RunTimes(3, 57)),
        # running now
        ([(0, "queued"), (2, "dispatched"), (3, "adopted")], 10, RunTimes(8, 2)),
        # canceled while queued
        ([(0, "queued"), (7, "canceled")], 99, RunTimes(0, 7)),
    ],
)
def test_running_and_waiting_time_from_the_history(
    events: list[tuple[float, str]], now: float, expected: RunTimes
) -> None:
    assert run_times(T0, [(at(s), kind) for s, kind in events], at(now)) == expected


@pytest.mark.anyio
async def test_the_api_shows_both_times(client: httpx.AsyncClient, db: Database) -> None:
    await new_deployment(client, "web")
    await upload(client, "web")
    run_id, _ = await start_run(db, "web", RunStatus.SUCCEEDED)
    start = utcnow() - timedelta(hours=1)
    async with db.session() as s:
        run = await runs.get_run(s, run_id)
        run.created_at = start
        for event in await runs.list_events(s, run_id):
            event.at = start  # its "queued" event
        for seconds, kind in [(3, "dispatched"), (13, "planned"), (613, "approved")]:
            s.add(RunEvent(run_id=run_id, kind=kind, at=start + timedelta(seconds=seconds)))
        for seconds, kind in [(614, "dispatched"), (634, "succeeded")]:
            s.add(RunEvent(run_id=run_id, kind=kind, at=start + timedelta(seconds=seconds)))
    one = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert (one["running_seconds"], one["waiting_seconds"]) == (30, 604)
    listed = (await client.get("/api/v1/runs")).json()
    assert [(r["running_seconds"], r["waiting_seconds"]) for r in listed] == [
        (one["running_seconds"], one["waiting_seconds"])
    ]


@pytest.mark.anyio
async def test_an_ended_run_stops_counting(client: httpx.AsyncClient, db: Database) -> None:
    """A run that has ended counts up to its end, even when its history lacks the terminal
    event (runs ended before the history had one): its times do not grow afterwards."""
    await new_deployment(client, "web")
    await upload(client, "web")
    run_id, _ = await start_run(db, "web", RunStatus.SUCCEEDED)
    async with db.session() as s:
        run = await runs.get_run(s, run_id)
        run.ended_at = run.created_at + timedelta(seconds=42)
    first = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert first["waiting_seconds"] == pytest.approx(42, abs=0.1)
    async with db.session() as s:
        await runs.add_event(s, run_id, "note")  # time passes; nothing changes
    again = (await client.get("/api/v1/runs")).json()[0]
    assert (again["running_seconds"], again["waiting_seconds"]) == (
        first["running_seconds"],
        first["waiting_seconds"],
    )
