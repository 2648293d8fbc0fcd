"""The scheduler's passes with a clock the test controls (``tick(now)``), on SQLite and
PostgreSQL: one run per due time, one run for many missed due times, the duplicate rule,
disabled schedules and deleted deployments; and two "backends" (each its own thread, event
loop and connections) ticking the same instants: still one run per due time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from backend.archive import Limits
from backend.crypto import Cipher
from backend.db import Database
from backend.errors import Conflict
from backend.models import AuditEntry, Run, RunEvent, RunStatus, Schedule
from backend.scheduler import Scheduler
from backend.store import configs, deployments, schedules
from tests.backend.archives import tar_gz

T0 = datetime(2030, 1, 1, 0, 10, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC)


async def add_deployment(db: Database, name: str, *, config: bool = True, **fields: object) -> None:
    async with db.session() as s:
        await deployments.create_deployment(s, name=name, **fields)  # type: ignore[arg-type]
    if config:
        async with db.session() as s:
            await configs.add_config_version(s, name, tar_gz(), Limits(100, 10**7))


async def add_schedule(
    db: Database, deployment: str, cron: str = "0 * * * *", now: datetime = T0, **fields: object
) -> int:
    async with db.session() as s:
        dep = await deployments.get_deployment(s, deployment)
        row = await schedules.create_schedule(
            s,
            dep,
            cron_expr=cron,
            now=now,
            **fields,  # type: ignore[arg-type]
        )
        return row.id


async def schedule_row(db: Database, schedule_id: int) -> Schedule:
    async with db.session() as s:
        row = await s.get(Schedule, schedule_id)
        assert row is not None
        return row


async def runs_of(db: Database, schedule_id: int) -> list[Run]:
    async with db.session() as s:
        rows = await s.scalars(select(Run).where(Run.schedule_id == schedule_id).order_by(Run.id))
        return list(rows)


async def due_comments(db: Database, schedule_id: int) -> list[str]:
    """The due time each run of the schedule was queued for, from its history."""
    async with db.session() as s:
        rows = await s.scalars(
            select(RunEvent.comment)
            .join(Run, Run.id == RunEvent.run_id)
            .where(Run.schedule_id == schedule_id, RunEvent.kind == "queued")
            .order_by(RunEvent.id)
        )
        return list(rows)


async def end_queued_runs(db: Database) -> None:
    """What a dispatcher and a runner would do: the waiting runs start and end."""
    async with db.session() as s:
        await s.execute(
            update(Run)
            .where(Run.status == RunStatus.QUEUED.value)
            .values(status=RunStatus.SUCCEEDED.value)
        )


class Woken:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def woken() -> Woken:
    return Woken()


@pytest.fixture
def scheduler(database: Database, woken: Woken) -> Scheduler:
    return Scheduler(database, woken, interval=3600)


@pytest.mark.anyio
async def test_each_due_time_queues_one_run(
    database: Database, scheduler: Scheduler, woken: Woken
) -> None:
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="plan")
    assert (await schedule_row(database, sid)).next_run_at == at(1)
    assert await scheduler.tick(at(0, 59, 59)) == []
    fired = await scheduler.tick(at(1))
    assert [(f.schedule_id, f.due_at) for f in fired] == [(sid, at(1))]
    assert woken.count == 1
    assert await scheduler.tick(at(1, 0, 30)) == []  # the same due time: claimed already
    row = await schedule_row(database, sid)
    assert (row.next_run_at, row.last_run_at, row.last_skipped) == (at(2), at(1), "")
    [run] = await runs_of(database, sid)
    assert (run.operation, run.status, run.created_by) == ("plan", "queued", f"schedule {sid}")
    assert row.last_run_id == run.id
    await end_queued_runs(database)
    assert len(await scheduler.tick(at(2, 0, 5))) == 1
    assert await due_comments(database, sid) == [
        "due 2030-01-01T01:00:00+00:00",
        "due 2030-01-01T02:00:00+00:00",
    ]
    async with database.session() as s:
        entries = await s.scalars(select(AuditEntry).where(AuditEntry.actor == f"schedule {sid}"))
        assert [e.result for e in entries] == [f"queued run {run.id}", f"queued run {run.id + 1}"]


@pytest.mark.anyio
async def test_missed_due_times_queue_one_run_and_the_next_is_after_now(
    database: Database, scheduler: Scheduler
) -> None:
    """A backend down from 00:30 to 05:30 missed five hourly due times: one run."""
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="drift")
    fired = await scheduler.tick(at(5, 30))
    assert [f.due_at for f in fired] == [at(1)]
    row = await schedule_row(database, sid)
    assert (row.next_run_at, row.last_run_at) == (at(6), at(1))
    assert await scheduler.tick(at(5, 59)) == []
    [run] = await runs_of(database, sid)
    assert run.operation == "drift"


@pytest.mark.anyio
async def test_a_schedule_never_queues_beside_its_own_queued_run(
    database: Database, scheduler: Scheduler, woken: Woken
) -> None:
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="plan")
    [first] = await scheduler.tick(at(1))
    assert first.run_id is not None
    [skipped] = await scheduler.tick(at(2))
    assert skipped.run_id is None
    assert skipped.skipped == f"run {first.run_id} of this schedule is still queued"
    assert woken.count == 1  # nothing new to dispatch
    row = await schedule_row(database, sid)
    assert row.last_skipped == (
        f"2030-01-01 02:00 UTC: run {first.run_id} of this schedule is still queued"
    )
    assert (row.next_run_at, row.last_run_at, row.last_run_id) == (at(3), at(2), first.run_id)
    assert len(await runs_of(database, sid)) == 1
    # A run of another schedule, or one that started, does not hold it back.
    other = await add_schedule(database, "web", cron="30 * * * *", kind="plan")
    assert [f.run_id is not None for f in await scheduler.tick(at(2, 30))] == [True]
    async with database.session() as s:
        await s.execute(update(Run).where(Run.id == first.run_id).values(status="running"))
    [third] = await scheduler.tick(at(3))
    assert third.run_id is not None and third.schedule_id == sid
    assert (await schedule_row(database, sid)).last_skipped == ""
    assert len(await runs_of(database, other)) == 1


@pytest.mark.anyio
async def test_disabled_schedules_are_ignored_and_enabling_skips_the_times_missed(
    database: Database, scheduler: Scheduler
) -> None:
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="plan", enabled=False)
    assert await scheduler.tick(at(9)) == []
    assert (await schedule_row(database, sid)).next_run_at == at(1)
    async with database.session() as s:
        dep = await deployments.get_deployment(s, "web")
        row = await schedules.get_schedule(s, dep, sid)
        await schedules.update_schedule(s, dep, row, enabled=True, now=at(9, 10))
    assert (await schedule_row(database, sid)).next_run_at == at(10)
    assert await scheduler.tick(at(9, 59)) == []
    assert len(await scheduler.tick(at(10))) == 1


@pytest.mark.anyio
async def test_a_deleted_deployment_s_schedules_wait_until_it_is_restored(
    database: Database, scheduler: Scheduler
) -> None:
    await add_deployment(database, "gone")
    await add_deployment(database, "kept")
    gone = await add_schedule(database, "gone", kind="plan")
    kept = await add_schedule(database, "kept", kind="plan")
    async with database.session() as s:
        await deployments.delete_deployment(s, Cipher(None), "gone")
    fired = await scheduler.tick(at(1))
    assert [f.schedule_id for f in fired] == [kept]
    assert (await schedule_row(database, gone)).next_run_at == at(1)
    assert await runs_of(database, gone) == []
    async with database.session() as s:
        await deployments.restore_deployment(s, "gone")
    fired = await scheduler.tick(at(4))
    assert [(f.schedule_id, f.due_at, bool(f.run_id)) for f in fired] == [
        (gone, at(1), True),  # overdue since 01:00: once
        (kept, at(2), False),  # its 01:00 run is still queued
    ]


@pytest.mark.anyio
async def test_a_refused_run_is_a_recorded_skip_and_the_schedule_moves_on(
    database: Database, scheduler: Scheduler
) -> None:
    await add_deployment(database, "empty", config=False)
    await add_deployment(database, "prod")
    empty = await add_schedule(database, "empty", kind="plan")
    prod = await add_schedule(database, "prod", kind="apply", auto_approve="always")
    async with database.session() as s:  # four eyes turned on after the schedule was made
        dep = await deployments.get_deployment(s, "prod")
        dep.require_other_approver = True
    fired = {f.schedule_id: f for f in await scheduler.tick(at(1))}
    assert fired[empty].run_id is None and "configuration" in fired[empty].skipped
    assert fired[prod].run_id is None
    assert "requires another approver" in fired[prod].skipped
    for sid in (empty, prod):
        row = await schedule_row(database, sid)
        assert row.next_run_at == at(2) and row.last_skipped.startswith("2030-01-01 01:00 UTC: ")
        assert await runs_of(database, sid) == []


@pytest.mark.anyio
async def test_kinds_queue_their_operation_and_approval(
    database: Database, scheduler: Scheduler
) -> None:
    await add_deployment(database, "web", auto_approve="always")
    drift = await add_schedule(database, "web", kind="drift")
    plan = await add_schedule(database, "web", cron="1 * * * *", kind="plan")
    apply = await add_schedule(
        database, "web", cron="2 * * * *", kind="apply", auto_approve="no-destroy"
    )
    manual = await add_schedule(database, "web", cron="3 * * * *", kind="apply")
    await scheduler.tick(at(1, 5))
    got = {sid: (await runs_of(database, sid))[0] for sid in (drift, plan, apply, manual)}
    assert got[drift].operation == "drift" and got[plan].operation == "plan"
    assert (got[apply].operation, got[apply].approve_policy) == ("apply", "no-destroy")
    # The schedule's policy, not the deployment's default ("always").
    assert (got[manual].operation, got[manual].approve_policy) == ("apply", "never")


@pytest.mark.anyio
async def test_creating_refuses_what_the_scheduler_could_not_run(database: Database) -> None:
    await add_deployment(database, "four-eyes", require_other_approver=True)
    with pytest.raises(Conflict, match="requires another approver"):
        await add_schedule(database, "four-eyes", kind="apply", auto_approve="always")
    await add_schedule(database, "four-eyes", kind="apply", auto_approve="never")
    async with database.session() as s:
        dep = await deployments.get_deployment(s, "four-eyes")
        for n in range(schedules.MAX_PER_DEPLOYMENT - 1):
            await schedules.create_schedule(s, dep, cron_expr=f"{n} 3 * * *", now=T0)
    with pytest.raises(Conflict, match="the most it may have"):
        await add_schedule(database, "four-eyes")


@pytest.mark.anyio
async def test_run_now_follows_the_duplicate_rule_and_keeps_the_due_times(
    database: Database, scheduler: Scheduler
) -> None:
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="plan")
    async with database.session() as s:
        dep = await deployments.get_deployment(s, "web")
        run_id = await schedules.trigger(s, dep, sid, actor="ops", now=at(0, 20))
    row = await schedule_row(database, sid)
    assert (row.next_run_at, row.last_run_at, row.last_run_id) == (at(1), at(0, 20), run_id)
    async with database.session() as s:
        dep = await deployments.get_deployment(s, "web")
        with pytest.raises(Conflict, match=f"run {run_id} of this schedule is still queued"):
            await schedules.trigger(s, dep, sid, actor="ops")
    [skipped] = await scheduler.tick(at(1))
    assert skipped.run_id is None
    [run] = await runs_of(database, sid)
    assert (run.id, run.created_by) == (run_id, "ops")


# -- two backends ---------------------------------------------------------------------------

BACKENDS = 2
STEPS = 20
SCHEDULES = 4


def test_two_backends_ticking_the_same_instants_queue_one_run_per_due_time(db_url: str) -> None:
    """Each backend is a thread with its own event loop and database connections, as two
    processes would be. At every step both tick the same instant at once (a barrier), with
    every schedule due: each due time gets exactly one run, whoever claims it."""
    start = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)

    async def prepare() -> list[int]:
        db = Database(db_url)
        try:
            ids = []
            for n in range(SCHEDULES):
                await add_deployment(db, f"d{n}")
                ids.append(
                    await add_schedule(db, f"d{n}", cron="* * * * *", now=start, kind="plan")
                )
            return ids
        finally:
            await db.dispose()

    ids = asyncio.run(prepare())
    barrier = threading.Barrier(BACKENDS, timeout=60)
    claimed: dict[int, list[tuple[int, datetime, int | None]]] = {b: [] for b in range(BACKENDS)}
    failures: list[BaseException] = []

    def backend(number: int) -> None:
        async def main() -> None:
            db = Database(db_url)
            scheduler = Scheduler(db, lambda: None, interval=3600)
            try:
                for step in range(STEPS):
                    now = start + timedelta(minutes=step + 1)
                    barrier.wait()  # this thread's loop has nothing else to run
                    fired = await scheduler.tick(now)
                    # Every claim, a skip too: with the runs of the last step ended, a
                    # skip would be a due time claimed twice (the duplicate rule hiding it).
                    claimed[number] += [(f.schedule_id, f.due_at, f.run_id) for f in fired]
                    barrier.wait()
                    if number == 0:
                        await end_queued_runs(db)
                    barrier.wait()
            finally:
                await db.dispose()

        try:
            asyncio.run(main())
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=backend, args=(b,)) for b in range(BACKENDS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    assert all(run_id for b in range(BACKENDS) for _, _, run_id in claimed[b]), claimed
    everything = [(sid, due) for b in range(BACKENDS) for sid, due, _ in claimed[b]]
    expected = {
        (sid, datetime(2030, 1, 1, 0, step + 1, tzinfo=UTC)) for sid in ids for step in range(STEPS)
    }
    assert len(everything) == len(expected) and set(everything) == expected

    async def count() -> dict[int, list[str]]:
        db = Database(db_url)
        try:
            return {sid: await due_comments(db, sid) for sid in ids}
        finally:
            await db.dispose()

    for comments in asyncio.run(count()).values():
        assert len(comments) == len(set(comments)) == STEPS


@pytest.mark.anyio
async def test_a_schedule_whose_zone_left_the_database_is_disabled_with_the_reason(
    database: Database, scheduler: Scheduler
) -> None:
    """A zone checked when stored that a later tzdata no longer has: no pass fails on it
    again and again; it is disabled, and says why."""
    await add_deployment(database, "web")
    sid = await add_schedule(database, "web", kind="plan")
    async with database.session() as s:
        await s.execute(update(Schedule).where(Schedule.id == sid).values(timezone="Gone/Zone"))
    [fired] = await scheduler.tick(at(1))
    assert fired.run_id is None and "not in this system's zone database" in fired.skipped
    row = await schedule_row(database, sid)
    assert not row.enabled and row.last_skipped.startswith("2030-01-01 01:00 UTC: disabled: ")
    assert await runs_of(database, sid) == []
    assert await scheduler.tick(at(2)) == []


async def new_token(db: Database, name: str, role: str, scope: object = None) -> int:
    from backend.store import tokens

    async with db.session() as s:
        row, _ = await tokens.create_token(s, name, role=role, scope=scope)  # type: ignore[arg-type]
        return row.id


@pytest.mark.anyio
async def test_a_schedule_acts_for_its_owner_and_never_beyond(
    database: Database, scheduler: Scheduler
) -> None:
    """A scheduled run is its owner's (four eyes: the owner may not approve it), and a
    due time queues nothing once the owner may no longer start it (revoked, demoted,
    scoped away): a skip says why, until an operator who may takes the schedule over."""
    from backend.models import ApiToken, Deployment

    await add_deployment(database, "prod", require_other_approver=True)
    alice = await new_token(database, "alice", "operator")
    bob = await new_token(database, "bob", "operator")
    applies = await add_schedule(
        database, "prod", kind="apply", created_by="alice", created_by_token=alice
    )
    plans = await add_schedule(
        database, "prod", cron="30 * * * *", kind="plan", created_by="bob", created_by_token=bob
    )
    fired = {f.schedule_id: f for f in await scheduler.tick(at(1))}
    (run,) = await runs_of(database, applies)
    assert fired[applies].run_id == run.id and run.created_by_token == alice
    from backend.store import run_transitions

    async with database.session() as s:  # alice's run, as if alice had started it
        run_row = await s.get(Run, run.id)
        assert run_row is not None
        run_row.status = RunStatus.AWAITING_APPROVAL.value
    with pytest.raises(Conflict, match="requires another approver"):
        async with database.session() as s:
            await run_transitions.approve(s, run.id, actor="alice", actor_id=alice, plan_ttl=3600)
    await end_queued_runs(database)
    async with database.session() as s:
        await s.execute(update(Run).values(status=RunStatus.SUCCEEDED.value))
        await s.execute(update(ApiToken).where(ApiToken.id == alice).values(revoked=True))
        await s.execute(update(ApiToken).where(ApiToken.id == bob).values(role="viewer"))
    fired = {f.schedule_id: f for f in await scheduler.tick(at(2))}
    assert fired[applies].run_id is None and "'alice', was revoked" in fired[applies].skipped
    assert fired[plans].run_id is None
    assert "'bob', is a viewer, and a plan run needs planner" in fired[plans].skipped
    # A scope that no longer covers the deployment: the same.
    async with database.session() as s:
        await s.execute(
            update(ApiToken)
            .where(ApiToken.id == bob)
            .values(role="operator", scope={"names": ["dev-*"]})
        )
    fired = {f.schedule_id: f for f in await scheduler.tick(at(3))}
    assert "no longer has deployment 'prod' in its scope" in fired[plans].skipped
    # Another operator takes it over by changing it: it runs, as theirs.
    carol = await new_token(database, "carol", "operator")
    async with database.session() as s:
        dep = await s.scalar(select(Deployment).where(Deployment.name == "prod"))
        assert dep is not None
        row = await s.get(Schedule, plans)
        assert row is not None
        await schedules.update_schedule(s, dep, row, changed_by=("carol", carol), now=at(3))
    fired = {f.schedule_id: f for f in await scheduler.tick(at(4))}
    assert fired[plans].run_id is not None
    assert (await runs_of(database, plans))[-1].created_by_token == carol
