"""Terraform's http-backend requests as runners relay them (`backend.state_service`): which
runs may ask, versions, locks, the answers terraform expects. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import RunStatus, utcnow
from backend.state_service import StateService
from backend.store import deployments, runs, state
from protos.iacrunner.v1 import runner_pb2 as pb
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio


def doc(serial: int, lineage: str = "lin-1", **extra: object) -> bytes:
    return json.dumps({"version": 4, "serial": serial, "lineage": lineage, **extra}).encode()


def lock_info(lock_id: str) -> bytes:
    return json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Who": "t@h"}).encode()


def detail(reply: pb.StateResponse) -> str:
    return str(json.loads(reply.body)["detail"])


@dataclass
class Terraform:
    """What the terraform of one run sends through its runner."""

    service: StateService
    runner: str
    runner_run_id: str
    run_id: int

    async def call(
        self, method: str, body: bytes = b"", lock_id: str = "", md5: str = ""
    ) -> pb.StateResponse:
        call = pb.StateCall(
            run_id=self.runner_run_id, method=method, body=body, lock_id=lock_id, content_md5=md5
        )
        return await self.service.handle(self.runner, call)

    async def get(self) -> pb.StateResponse:
        return await self.call("GET")

    async def post(self, body: bytes, lock_id: str = "", md5: str = "") -> pb.StateResponse:
        return await self.call("POST", body, lock_id, md5)


@pytest.fixture
def service(app: FastAPI) -> StateService:
    """A backend's state service, as the engine's, under a backend id of the test's own (so
    the app's engine, which adopts runs claimed under its id, leaves these runs alone)."""
    engine = app.state.engine
    return StateService(engine.db, engine.cipher, "test-backend", 64 * 1024 * 1024, engine.run_of)


async def terraform_of(
    service: StateService, db: Database, runner: str = "r1", status: RunStatus = RunStatus.RUNNING
) -> Terraform:
    run_id, runner_run_id = await start_run(
        db, "web", status, runner=runner, backend_id=service.backend_id
    )
    return Terraform(service, runner, runner_run_id, run_id)


@pytest.fixture
async def tf(client: httpx.AsyncClient, db: Database, service: StateService) -> Terraform:
    await new_deployment(client, "web")
    await upload(client, "web")
    return await terraform_of(service, db)


async def set_run(db: Database, run_id: int, **values: Any) -> None:
    async with db.session() as s:
        run = await runs.get_run(s, run_id)
        for key, value in values.items():
            setattr(run, key, value)


async def test_who_may_ask(tf: Terraform, db: Database, service: StateService) -> None:
    assert (await tf.get()).status == 204
    # The runner-side id of no run, or of a run on another runner: refused.
    stranger = Terraform(service, "r1", "btest-r999-apply-1-apply", 999)
    assert (await stranger.get()).status == 403
    elsewhere = Terraform(service, "r2", tf.runner_run_id, tf.run_id)
    reply = await elsewhere.get()
    assert reply.status == 403 and "no executing run on r2" in detail(reply)
    # A run that is not executing may not touch state.
    for status in (RunStatus.QUEUED, RunStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED):
        await set_run(db, tf.run_id, status=status.value)
        reply = await tf.get()
        assert reply.status == 403 and f"is {status.value}" in detail(reply)
    await set_run(db, tf.run_id, status=RunStatus.APPLYING.value)
    assert (await tf.get()).status == 204
    # Executed by another backend (it adopted the run): 421, the runner holds the call
    # for the new owner.
    await set_run(db, tf.run_id, claimed_by="another-backend")
    assert (await tf.get()).status == 421
    await set_run(db, tf.run_id, claimed_by=service.backend_id)
    assert (await tf.call("PUT")).status == 405


async def test_write_read_and_versions(client: httpx.AsyncClient, tf: Terraform) -> None:
    first = doc(1)
    md5 = base64.b64encode(hashlib.md5(first).digest()).decode()
    reply = await tf.post(first, md5=md5)
    assert reply.status == 200, reply.body
    assert (await tf.post(doc(2))).status == 200
    got = await tf.get()
    assert got.status == 200 and got.body == doc(2)
    shown = (await client.get("/api/v1/deployments/web/state")).json()
    assert shown["lock"] is None
    assert [(v["serial"], v["run_id"], v["deleted"]) for v in shown["versions"]] == [
        (2, tf.run_id, False),
        (1, tf.run_id, False),
    ]
    oldest = shown["versions"][1]["id"]
    raw = await client.get(f"/api/v1/deployments/web/state/versions/{oldest}")
    assert raw.content == first
    assert (await client.get("/api/v1/deployments/web/state/versions/999")).status_code == 404


async def test_a_write_identical_to_the_latest_version_stores_nothing(
    client: httpx.AsyncClient, tf: Terraform
) -> None:
    """A canceled apply wrote its state twice: one version, not two identical ones."""

    async def versions() -> list[tuple[int, str]]:
        shown = (await client.get("/api/v1/deployments/web/state")).json()
        return [(v["serial"], v["md5"]) for v in shown["versions"]]

    async def history() -> list[str]:
        run = (await client.get(f"/api/v1/runs/{tf.run_id}")).json()
        return [e["kind"] for e in run["events"] if e["kind"] == "state_written"]

    first = doc(3)
    for _ in range(3):
        assert (await tf.post(first)).status == 200
    stored = await versions()
    assert len(stored) == 1 and stored[0][0] == 3
    assert await history() == ["state_written"]
    # The same serial with other content, and another lineage, are new versions.
    assert (await tf.post(doc(3, extra=1))).status == 200
    assert (await tf.post(doc(3, "lin-2"))).status == 200
    assert len(await versions()) == 3
    assert (await tf.get()).body == doc(3, "lin-2")
    # After a DELETE (the marker version), the same state again is a new version.
    assert (await tf.call("DELETE")).status == 200
    assert (await tf.post(doc(3, "lin-2"))).status == 200
    assert len(await versions()) == 5
    assert (await tf.get()).body == doc(3, "lin-2")


@pytest.mark.parametrize(
    ("body", "md5", "status", "message"),
    [
        (b"not json", "", 400, "JSON document"),
        (b"[1]", "", 400, "JSON object"),
        (json.dumps({"lineage": "x"}).encode(), "", 400, "serial"),
        (json.dumps({"serial": 1}).encode(), "", 400, "lineage"),
        (doc(3), base64.b64encode(b"x" * 16).decode(), 400, "damaged"),
        (doc(3), "%%%", 400, "base64"),
        (doc(0), "", 409, "older than the stored serial"),
    ],
)
async def test_bad_writes_change_nothing(
    tf: Terraform, body: bytes, md5: str, status: int, message: str
) -> None:
    await tf.post(doc(1))
    reply = await tf.post(body, md5=md5)
    assert reply.status == status, reply.body
    assert message in detail(reply)
    assert (await tf.get()).body == doc(1)


async def test_locking(
    client: httpx.AsyncClient, db: Database, service: StateService, tf: Terraform
) -> None:
    other = await terraform_of(service, db, runner="r2")
    assert (await tf.call("LOCK", lock_info("A"))).status == 200
    # Retrying one's own lock is fine; anyone else gets 423 and the holder's info.
    assert (await tf.call("LOCK", lock_info("A"))).status == 200
    taken = await other.call("LOCK", lock_info("B"))
    assert taken.status == 423
    assert json.loads(taken.body)["ID"] == "A" and json.loads(taken.body)["Who"] == "t@h"
    shown = (await client.get("/api/v1/deployments/web/state")).json()["lock"]
    assert shown["lock_id"] == "A" and shown["run_id"] == tf.run_id
    assert shown["runner_id"] == "r1"

    # Writes while locked: no id -> 423, wrong id -> 409, the holder's id -> 200.
    assert (await other.post(doc(1))).status == 423
    wrong = await other.post(doc(1), lock_id="B")
    assert wrong.status == 409 and "lock id mismatch" in detail(wrong)
    assert (await tf.post(doc(1), lock_id="A")).status == 200
    assert (await other.call("DELETE")).status == 423

    assert (await other.call("UNLOCK", lock_info("B"))).status == 409
    # An empty unlock body (terraform force-unlock) only works for the holding run.
    assert (await other.call("UNLOCK")).status == 409
    assert (await tf.call("UNLOCK", lock_info("A"))).status == 200
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None
    # A write claiming a lock that is no longer held is refused: its state may be stale.
    stale = await tf.post(doc(2), lock_id="A")
    assert stale.status == 409 and "not held" in detail(stale)

    async with db.session() as s:
        kinds = [e.kind for e in await runs.list_events(s, tf.run_id)]
    assert kinds == ["queued", "state_locked", "state_written", "state_unlocked"]


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b'{"ID": ""}', b"nope"])
async def test_bad_lock_info_is_refused(
    client: httpx.AsyncClient, tf: Terraform, body: bytes
) -> None:
    reply = await tf.call("LOCK", body)
    assert reply.status == 400
    assert "'ID'" in detail(reply)
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None


async def test_delete_keeps_history(client: httpx.AsyncClient, tf: Terraform) -> None:
    await tf.post(doc(1))
    assert (await tf.call("DELETE")).status == 200
    assert (await tf.get()).status == 204
    versions = (await client.get("/api/v1/deployments/web/state")).json()["versions"]
    assert [v["deleted"] for v in versions] == [True, False]
    # A new lineage may start after the delete.
    assert (await tf.post(doc(1, "lin-2"))).status == 200


async def test_release_lock_records_why(
    client: httpx.AsyncClient, db: Database, tf: Terraform
) -> None:
    assert (await tf.call("LOCK", lock_info("A"))).status == 200
    async with db.session() as s:
        dep = await deployments.get_deployment(s, "web")
        released = await state.release_lock(s, dep.id, "runner r1 was killed", tf.run_id)
        assert released is not None and released.lock_id == "A"
        assert await state.release_lock(s, dep.id, "again") is None
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None
    async with db.session() as s:
        events = await runs.list_events(s, tf.run_id)
    assert events[-1].kind == "state_lock_released"
    assert "runner r1 was killed" in events[-1].message and "lock A" in events[-1].message


async def test_state_body_size_cap(tf: Terraform, service: StateService) -> None:
    service.max_state_bytes = 1000
    reply = await tf.post(doc(1, pad="x" * 2000))
    assert reply.status == 413
    assert (await tf.get()).status == 204


async def test_concurrent_lockers_one_wins(
    db: Database, service: StateService, tf: Terraform
) -> None:
    contenders = [tf] + [await terraform_of(service, db, runner=f"r{n}") for n in range(2, 6)]
    replies = await asyncio.gather(
        *(c.call("LOCK", lock_info(f"L{n}")) for n, c in enumerate(contenders))
    )
    codes = sorted(r.status for r in replies)
    assert codes == [200, 423, 423, 423, 423]
    winner = next(n for n, r in enumerate(replies) if r.status == 200)
    assert all(json.loads(r.body)["ID"] == f"L{winner}" for r in replies if r.status == 423)


async def test_recovered_state_is_a_version_and_never_rolls_back(
    client: httpx.AsyncClient, app: FastAPI, db: Database, service: StateService, tf: Terraform
) -> None:
    def recover(data: bytes, runner_run_id: str = "") -> pb.StateCall:
        own = f"{app.state.engine.prefix}-r{tf.run_id}-apply-1-apply"
        return pb.StateCall(run_id=runner_run_id or own, method="RECOVER", body=data)

    assert (await tf.post(doc(3))).status == 200
    # A run on another runner, a run id of another database, an older serial: refused.
    assert (await service.handle("r2", recover(doc(4)))).status == 403
    foreign = recover(doc(4), runner_run_id=f"bother-r{tf.run_id}-apply-1-apply")
    assert (await service.handle("r1", foreign)).status == 404
    older = await service.handle("r1", recover(doc(2)))
    assert older.status == 409 and "older" in detail(older)
    reply = await service.handle("r1", recover(doc(4)))
    assert reply.status == 200 and b"recovered into state version" in reply.body
    shown = (await client.get("/api/v1/deployments/web/state")).json()["versions"]
    assert shown[0]["serial"] == 4 and shown[0]["recovered"] is True
    assert shown[1]["recovered"] is False
    async with db.session() as s:
        events = await runs.list_events(s, tf.run_id)
    assert events[-1].kind == "state_recovered" and "from runner r1" in events[-1].message
    # Asked again (a runner retrying): the same version, not a second one.
    assert (await service.handle("r1", recover(doc(4)))).status == 200
    assert len((await client.get("/api/v1/deployments/web/state")).json()["versions"]) == 2
    # Another run wrote the state after this one started: the unsaved state would undo
    # that write, so it is refused (and stays on the runner).
    await set_run(db, tf.run_id, started_at=utcnow())
    other = await terraform_of(service, db, runner="r2")
    assert (await other.post(doc(5))).status == 200
    stale = await service.handle("r1", recover(doc(6)))
    assert stale.status == 409 and "written by another run" in detail(stale)


async def test_while_the_database_is_away_a_state_call_waits_then_gets_503(
    service: StateService,
) -> None:
    """A lost database is waited for (the runner holds terraform's request), then answered
    503, which terraform retries; never a 500."""
    away = Database("postgresql://postgres@127.0.0.1:9/iac")
    try:
        patient = StateService(
            away, service.cipher, "test-backend", 1 << 20, service.owner_of, patience=1.0
        )
        started = asyncio.get_running_loop().time()
        reply = await patient.handle(
            "r1", pb.StateCall(run_id="btest-r1-apply-1-apply", method="GET")
        )
        took = asyncio.get_running_loop().time() - started
    finally:
        await away.dispose()
    assert reply.status == 503 and b"database is unavailable" in reply.body
    assert 1.0 <= took < 30, took
