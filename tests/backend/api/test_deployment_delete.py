"""Deleting a deployment keeps it: refused while its state manages resources (unless
forced), hidden everywhere but the deleted list, restorable whole, purged for good only
on request (two steps) or after the retention period."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from backend.app import create_app
from backend.db import Database
from backend.logs.batch import LogBatch
from backend.models import (
    ConfigVersion,
    Deployment,
    LogChunk,
    Run,
    RunEvent,
    RunStatus,
    StateVersion,
    Variable,
    utcnow,
)
from backend.state_service import StateService
from backend.store import deployments, executions, runs, state
from protos.iacrunner.v1 import runner_pb2 as pb
from tests.backend.archives import tar_gz
from tests.backend.conftest import make_settings
from tests.backend.helpers import new_deployment, snapshot, start_run, upload

pytestmark = pytest.mark.anyio
API = "/api/v1"


def tf_state(serial: int, *instances: int, data_sources: int = 0) -> bytes:
    """A Terraform state with one managed resource per entry of `instances` (that many
    instances each) and `data_sources` data sources."""
    resources: list[dict[str, object]] = [
        {"mode": "managed", "type": "terraform_data", "name": f"r{i}", "instances": [{}] * n}
        for i, n in enumerate(instances)
    ]
    resources += [
        {"mode": "data", "type": "external", "name": f"d{i}", "instances": [{}]}
        for i in range(data_sources)
    ]
    doc = {"version": 4, "serial": serial, "lineage": "lin", "resources": resources}
    return json.dumps(doc).encode()


async def write_state(app: FastAPI, name: str, data: bytes) -> None:
    db: Database = app.state.db
    async with db.session() as s:
        dep = await deployments.get_deployment(s, name)
        await state.write_state(s, dep, data, lock_id=None, run_id=None, cipher=app.state.cipher)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait until `check()` holds, polling; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_delete_is_refused_while_the_state_manages_resources(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await new_deployment(client, "web")
    await write_state(app, "web", tf_state(1, 2, 1, data_sources=1))
    assert (await client.get(f"{API}/deployments/web")).json()["managed_resources"] == 3
    refused = await client.delete(f"{API}/deployments/web")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "deployment 'web' still manages 3 resources in its latest state; destroy them first "
        "(iac destroy web) or delete with force=true"
    )
    assert (await client.get(f"{API}/deployments/web")).status_code == 200
    # Destroyed (the latest state has nothing left): deleted without force.
    await write_state(app, "web", tf_state(2, data_sources=1))
    deleted = await client.delete(f"{API}/deployments/web")
    assert deleted.status_code == 200, deleted.text
    await client.post(f"{API}/deployments/web/restore")
    await write_state(app, "web", tf_state(3, 1))
    assert "1 resource in" in (await client.delete(f"{API}/deployments/web")).json()["detail"]
    forced = await client.delete(f"{API}/deployments/web", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["deleted_at"] is not None
    assert body["purge_after"][:19] > body["deleted_at"][:19]


async def test_a_deleted_deployment_is_hidden_everywhere_and_restored_whole(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    await new_deployment(client, "web", required_labels={"provider": "aws"})
    await new_deployment(client, "other")
    await upload(client, "web")
    await client.put(f"{API}/deployments/web/variables/region", json={"value": "eu"})
    await client.put(
        f"{API}/deployments/web/variables/secret", json={"value": "s", "sensitive": True}
    )
    run_id, step = await start_run(db, "web", RunStatus.RUNNING, "r1", backend_id="test")
    async with db.session() as s:
        await executions.store_chunk(s, run_id, 0, LogBatch.of(1, "first line\nsecond line"))
    await write_state(app, "web", tf_state(1))
    async with db.session() as s:
        (await runs.get_run(s, run_id)).status = RunStatus.SUCCEEDED.value
    views = [
        f"{API}/deployments/web",
        f"{API}/deployments/web/config",
        f"{API}/deployments/web/variables",
        f"{API}/deployments/web/state",
        f"{API}/runs/{run_id}",
        f"{API}/runs?deployment=web",
    ]
    before = await snapshot(client, *views)
    log_before = (await client.get(f"{API}/runs/{run_id}/logs")).text

    deleted = await client.delete(f"{API}/deployments/web")
    assert deleted.status_code == 200, deleted.text
    assert [d["name"] for d in (await client.get(f"{API}/deployments")).json()] == ["other"]
    assert (await client.get(f"{API}/runs")).json() == []
    assert (await client.get(f"{API}/runs", params={"deployment": "web"})).json() == []
    listed = (await client.get(f"{API}/deployments", params={"deleted": "true"})).json()
    assert [d["name"] for d in listed] == ["web"]
    assert listed[0]["deleted_at"] == deleted.json()["deleted_at"]
    assert listed[0]["purge_after"] == deleted.json()["purge_after"]
    # Every other route answers 404 for its name and its runs.
    for method, path, kwargs in [
        ("GET", f"{API}/deployments/web", {}),
        ("DELETE", f"{API}/deployments/web", {}),
        ("GET", f"{API}/deployments/web/config", {}),
        ("GET", f"{API}/deployments/web/config/1", {}),
        ("POST", f"{API}/deployments/web/config", {"content": tar_gz()}),
        ("GET", f"{API}/deployments/web/variables", {}),
        ("PUT", f"{API}/deployments/web/variables/x", {"json": {"value": "v"}}),
        ("DELETE", f"{API}/deployments/web/variables/region", {}),
        ("GET", f"{API}/deployments/web/state", {}),
        ("GET", f"{API}/deployments/web/state/versions/1", {}),
        ("POST", f"{API}/runs", {"json": {"deployment": "web", "operation": "plan"}}),
        ("GET", f"{API}/runs/{run_id}", {}),
        ("GET", f"{API}/runs/{run_id}/logs", {}),
        ("GET", f"{API}/runs/{run_id}/logs?follow=true", {}),
        ("POST", f"{API}/runs/{run_id}/approve", {}),
        ("POST", f"{API}/runs/{run_id}/cancel", {}),
    ]:
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path, response.text)
        assert "deleted" in response.json()["detail"], (method, path, response.text)
    # Its runs' terraform reaches no state either.
    async with db.session() as s:
        (await runs.get_run(s, run_id)).status = RunStatus.APPLYING.value
    service = StateService(db, app.state.cipher, "test", 1 << 20, app.state.engine.run_of)
    refused = await service.handle("r1", pb.StateCall(run_id=step, method="GET"))
    assert refused.status == 403 and b"deleted" in refused.body
    async with db.session() as s:
        (await runs.get_run(s, run_id)).status = RunStatus.SUCCEEDED.value
    # Its name stays taken until it is restored or purged.
    again = await client.post(f"{API}/deployments", json={"name": "web"})
    assert again.status_code == 409
    assert "a deleted deployment named 'web' exists" in again.json()["detail"]
    assert "iac deployments restore web" in again.json()["detail"]

    restored = await client.post(f"{API}/deployments/web/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["deleted_at"] is None
    assert await snapshot(client, *views) == before
    assert (await client.get(f"{API}/runs/{run_id}/logs")).text == log_before
    assert (await client.get(f"{API}/deployments", params={"deleted": "true"})).json() == []
    # Restoring a live or unknown deployment says so.
    assert (await client.post(f"{API}/deployments/web/restore")).status_code == 409
    assert (await client.post(f"{API}/deployments/nope/restore")).status_code == 404


async def test_purging_takes_two_steps_and_removes_everything(
    client: httpx.AsyncClient, db: Database
) -> None:
    await new_deployment(client, "web")
    await upload(client, "web")
    await client.put(f"{API}/deployments/web/variables/region", json={"value": "eu"})
    run_id, _ = await start_run(db, "web", RunStatus.FAILED)
    async with db.session() as s:
        await executions.store_chunk(s, run_id, 0, LogBatch.of(1, "a line"))
    purge = {"purge": "true"}
    live = await client.delete(f"{API}/deployments/web", params=purge)
    assert live.status_code == 409
    assert "delete it first" in live.json()["detail"]
    assert (await client.delete(f"{API}/deployments/nope", params=purge)).status_code == 404
    assert (await client.delete(f"{API}/deployments/web")).status_code == 200
    assert (await client.delete(f"{API}/deployments/web", params=purge)).status_code == 204
    assert (await client.get(f"{API}/deployments", params={"deleted": "true"})).json() == []
    async with db.session() as s:
        for model in (Deployment, ConfigVersion, Variable, Run, RunEvent, LogChunk, StateVersion):
            assert await s.scalar(select(func.count()).select_from(model)) == 0, model
    # The name is free again.
    await new_deployment(client, "web")


async def test_purge_expired_removes_only_what_is_past_the_retention(db: Database) -> None:
    async with db.session() as s:
        for name in ("old", "young", "live"):
            await deployments.create_deployment(s, name=name)
    async with db.session() as s:
        old = await deployments.get_deployment(s, "old")
        young = await deployments.get_deployment(s, "young")
        now = utcnow().replace(microsecond=0)
        old.deleted_at = now
        young.deleted_at = now + timedelta(days=1)
    async with db.session() as s:
        assert await deployments.purge_expired(s, 30, now + timedelta(days=29)) == []
        assert await deployments.purge_expired(s, 30, now + timedelta(days=30)) == ["old"]
    async with db.session() as s:
        names = {d.name for d in await deployments.list_deployments(s, deleted=True)}
        assert names == {"young"}
        assert await deployments.purge_expired(s, 0.5, now + timedelta(days=2)) == ["young"]
        assert [d.name for d in await deployments.list_deployments(s)] == ["live"]


async def test_the_backend_purges_at_start_and_then_periodically(
    db_url: str, tmp_path: Path
) -> None:
    """With a retention of 0 days: a deployment deleted before the start is purged by the
    start, one deleted while it runs by the next periodic purge."""
    first = create_app(make_settings(db_url, tmp_path / "a"))
    async with first.router.lifespan_context(first):
        async with first.state.db.session() as s:
            await deployments.create_deployment(s, name="before")
            await deployments.create_deployment(s, name="during")
        async with first.state.db.session() as s:
            await deployments.delete_deployment(s, first.state.cipher, "before")
        async with first.state.db.session() as s:
            assert [d.name for d in await deployments.list_deployments(s, deleted=True)] == [
                "before"
            ]  # the default retention keeps it

    settings = make_settings(db_url, tmp_path / "b", deleted_retention_days=0, purge_interval=0.2)
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        database: Database = second.state.db

        async def deleted_names() -> set[str]:
            async with database.session() as s:
                return {d.name for d in await deployments.list_deployments(s, deleted=True)}

        async def gone(name: str) -> bool:
            async with database.session() as s:
                return await s.scalar(select(Deployment.id).where(Deployment.name == name)) is None

        await eventually(lambda: gone("before"))
        async with database.session() as s:
            await deployments.delete_deployment(s, second.state.cipher, "during")
        await eventually(lambda: gone("during"))
        assert await deleted_names() == set()


async def test_a_run_and_a_delete_at_once_never_both_succeed(
    client: httpx.AsyncClient, db: Database
) -> None:
    """POST /runs locks the deployment for share: a delete racing it either sees the run
    (409, it is active) or wins, and then the run is refused (404). Never a queued run of
    a deleted deployment, which the dispatcher would pick up."""
    await new_deployment(client, "web")
    await upload(client, "web")
    outcomes = set()
    for _ in range(8):
        created, deleted = await asyncio.gather(
            client.post(f"{API}/runs", json={"deployment": "web", "operation": "plan"}),
            client.delete(f"{API}/deployments/web"),
        )
        outcomes.add((created.status_code, deleted.status_code))
        assert (created.status_code, deleted.status_code) in {(201, 409), (404, 200)}, (
            created.text,
            deleted.text,
        )
        if created.status_code == 201:
            await client.post(f"{API}/runs/{created.json()['id']}/cancel")
        else:
            await client.post(f"{API}/deployments/web/restore")
    async with db.session() as s:
        queued = await s.scalar(
            select(func.count())
            .select_from(Run)
            .join(Deployment, Deployment.id == Run.deployment_id)
            .where(Deployment.deleted_at.is_not(None), Run.status == RunStatus.QUEUED.value)
        )
    assert queued == 0, outcomes


async def test_a_delete_waits_for_a_run_being_queued_and_then_refuses(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    """The race made deterministic: POST /runs's transaction held open between reading the
    deployment (FOR SHARE) and queuing the run while DELETE comes in. The DELETE waits for
    it, then sees the run and refuses; without the lock it answered 200 and the run was
    queued on a deleted deployment."""
    await new_deployment(client, "web")
    await upload(client, "web")
    async with db.session() as s:
        dep = await deployments.get_deployment(s, "web", for_share=True)
        deleting = asyncio.create_task(client.delete(f"{API}/deployments/web"))
        if db_url.startswith("postgresql"):
            probe = Database(db_url)

            async def delete_blocked_or_done() -> bool:
                if deleting.done():
                    return True
                async with probe.engine.connect() as conn:
                    waiting = await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND datname = current_database()"
                        )
                    )
                return bool(waiting)

            try:
                await eventually(delete_blocked_or_done)
            finally:
                await probe.dispose()
        # (SQLite: the DELETE cannot start a transaction before this one ends.)
        run = await runs.create_run(s, dep, "plan")
    deleted = await deleting
    assert deleted.status_code == 409, deleted.text
    assert f"has active runs ({run.id})" in deleted.json()["detail"]
