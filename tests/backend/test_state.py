"""The Terraform ``http`` state backend at the protocol level: per-run auth, versions, locks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import httpx
import pytest

from backend.db import Database
from backend.models import RunStatus
from backend.store import deployments, runs, state
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio
URL = "/api/v1/state/web"


def doc(serial: int, lineage: str = "lin-1", **extra: object) -> bytes:
    return json.dumps({"version": 4, "serial": serial, "lineage": lineage, **extra}).encode()


def lock_info(lock_id: str) -> bytes:
    return json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Who": "t@h"}).encode()


@pytest.fixture
async def creds(client: httpx.AsyncClient, db: Database) -> tuple[str, str]:
    await new_deployment(client, "web")
    await upload(client, "web")
    run_id, token = await start_run(db, "web", RunStatus.RUNNING, runner="r1")
    return str(run_id), token


async def test_auth_rules(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, creds: tuple[str, str]
) -> None:
    run_id, token = creds
    assert (await anon.get(URL, auth=creds)).status_code == 204
    for bad in [(run_id, "wrong"), ("999", token), ("abc", token), (run_id, "")]:
        response = await anon.get(URL, auth=bad)
        assert response.status_code == 401, bad
        assert response.headers["www-authenticate"].startswith("Basic")
    assert (await anon.get(URL)).status_code == 401
    # A real run, but of another deployment.
    await new_deployment(client, "other")
    response = await anon.get("/api/v1/state/other", auth=creds)
    assert response.status_code == 403
    assert "may not access the state of 'other'" in response.json()["detail"]
    # A run that is not executing may not touch state.
    for status in (RunStatus.QUEUED, RunStatus.PLANNED, RunStatus.SUCCEEDED):
        async with db.session() as s:
            (await runs.get_run(s, int(run_id))).status = status.value
        response = await anon.get(URL, auth=creds)
        assert response.status_code == 403
        assert f"is {status.value}" in response.json()["detail"]
    async with db.session() as s:
        (await runs.get_run(s, int(run_id))).status = RunStatus.APPLYING.value
    assert (await anon.get(URL, auth=creds)).status_code == 204


async def test_write_read_and_versions(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, creds: tuple[str, str]
) -> None:
    first = doc(1)
    md5 = base64.b64encode(hashlib.md5(first).digest()).decode()
    response = await anon.post(URL, content=first, auth=creds, headers={"Content-MD5": md5})
    assert response.status_code == 200, response.text
    assert (await anon.post(URL, content=doc(2), auth=creds)).status_code == 200
    got = await anon.get(URL, auth=creds)
    assert got.status_code == 200 and got.content == doc(2)
    shown = (await client.get("/api/v1/deployments/web/state")).json()
    assert shown["lock"] is None
    assert [(v["serial"], v["run_id"], v["deleted"]) for v in shown["versions"]] == [
        (2, int(creds[0]), False),
        (1, int(creds[0]), False),
    ]
    oldest = shown["versions"][1]["id"]
    raw = await client.get(f"/api/v1/deployments/web/state/versions/{oldest}")
    assert raw.content == first
    assert (await client.get("/api/v1/deployments/web/state/versions/999")).status_code == 404


async def test_a_write_identical_to_the_latest_version_stores_nothing(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, creds: tuple[str, str]
) -> None:
    """A canceled apply wrote its state twice: one version, not two identical ones."""

    async def versions() -> list[tuple[int, str]]:
        shown = (await client.get("/api/v1/deployments/web/state")).json()
        return [(v["serial"], v["md5"]) for v in shown["versions"]]

    async def history() -> list[str]:
        run = (await client.get(f"/api/v1/runs/{creds[0]}")).json()
        return [e["kind"] for e in run["events"] if e["kind"] == "state_written"]

    first = doc(3)
    for _ in range(3):
        assert (await anon.post(URL, content=first, auth=creds)).status_code == 200
    stored = await versions()
    assert len(stored) == 1 and stored[0][0] == 3
    assert await history() == ["state_written"]
    # The same serial with other content, and another lineage, are new versions.
    assert (await anon.post(URL, content=doc(3, extra=1), auth=creds)).status_code == 200
    assert (await anon.post(URL, content=doc(3, "lin-2"), auth=creds)).status_code == 200
    assert len(await versions()) == 3
    got = await anon.get(URL, auth=creds)
    assert got.content == doc(3, "lin-2")
    # After a DELETE (the marker version), the same state again is a new version.
    assert (await anon.delete(URL, auth=creds)).status_code == 200
    assert (await anon.post(URL, content=doc(3, "lin-2"), auth=creds)).status_code == 200
    assert len(await versions()) == 5
    assert (await anon.get(URL, auth=creds)).content == doc(3, "lin-2")


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"not json", {}, 422, "JSON document"),
        (b"[1]", {}, 422, "JSON object"),
        (json.dumps({"lineage": "x"}).encode(), {}, 422, "serial"),
        (json.dumps({"serial": 1}).encode(), {}, 422, "lineage"),
        (doc(3), {"Content-MD5": base64.b64encode(b"x" * 16).decode()}, 422, "damaged"),
        (doc(3), {"Content-MD5": "%%%"}, 422, "base64"),
        (doc(0), {}, 409, "older than the stored serial"),
    ],
)
async def test_bad_writes_change_nothing(
    anon: httpx.AsyncClient,
    creds: tuple[str, str],
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    await anon.post(URL, content=doc(1), auth=creds)
    response = await anon.post(URL, content=body, auth=creds, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert (await anon.get(URL, auth=creds)).content == doc(1)


async def test_locking(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, creds: tuple[str, str]
) -> None:
    other = await start_run(db, "web", RunStatus.RUNNING, runner="r2")
    other_creds = (str(other[0]), other[1])
    assert (await anon.request("LOCK", URL, content=lock_info("A"), auth=creds)).status_code == 200
    # Retrying one's own lock is fine; anyone else gets 423 and the holder's info.
    assert (await anon.request("LOCK", URL, content=lock_info("A"), auth=creds)).status_code == 200
    taken = await anon.request("LOCK", URL, content=lock_info("B"), auth=other_creds)
    assert taken.status_code == 423
    assert taken.json()["ID"] == "A" and taken.json()["Who"] == "t@h"
    shown = (await client.get("/api/v1/deployments/web/state")).json()["lock"]
    assert shown["lock_id"] == "A" and shown["run_id"] == int(creds[0])
    assert shown["runner_id"] == "r1"

    # Writes while locked: no id → 423, wrong id → 409, the holder's id → 200.
    assert (await anon.post(URL, content=doc(1), auth=other_creds)).status_code == 423
    wrong = await anon.post(f"{URL}?ID=B", content=doc(1), auth=other_creds)
    assert wrong.status_code == 409 and "lock id mismatch" in wrong.json()["detail"]
    assert (await anon.post(f"{URL}?ID=A", content=doc(1), auth=creds)).status_code == 200
    assert (await anon.delete(URL, auth=other_creds)).status_code == 423

    bad_unlock = await anon.request("UNLOCK", URL, content=lock_info("B"), auth=other_creds)
    assert bad_unlock.status_code == 409
    # An empty unlock body (terraform force-unlock) only works for the holding run.
    assert (await anon.request("UNLOCK", URL, auth=other_creds)).status_code == 409
    assert (
        await anon.request("UNLOCK", URL, content=lock_info("A"), auth=creds)
    ).status_code == 200
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None
    # A write claiming a lock that is no longer held is refused: its state may be stale.
    stale = await anon.post(f"{URL}?ID=A", content=doc(2), auth=creds)
    assert stale.status_code == 409 and "not held" in stale.json()["detail"]

    async with db.session() as s:
        kinds = [e.kind for e in await runs.list_events(s, int(creds[0]))]
    assert kinds == ["queued", "state_locked", "state_written", "state_unlocked"]


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b'{"ID": ""}', b"nope"])
async def test_bad_lock_info_is_refused(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, creds: tuple[str, str], body: bytes
) -> None:
    response = await anon.request("LOCK", URL, content=body, auth=creds)
    assert response.status_code == 422
    assert "'ID'" in response.json()["detail"]
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None


async def test_delete_keeps_history(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, creds: tuple[str, str]
) -> None:
    await anon.post(URL, content=doc(1), auth=creds)
    assert (await anon.delete(URL, auth=creds)).status_code == 200
    assert (await anon.get(URL, auth=creds)).status_code == 204
    versions = (await client.get("/api/v1/deployments/web/state")).json()["versions"]
    assert [v["deleted"] for v in versions] == [True, False]
    # A new lineage may start after the delete.
    assert (await anon.post(URL, content=doc(1, "lin-2"), auth=creds)).status_code == 200


async def test_release_lock_records_why(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, creds: tuple[str, str]
) -> None:
    assert (await anon.request("LOCK", URL, content=lock_info("A"), auth=creds)).status_code == 200
    async with db.session() as s:
        dep = await deployments.get_deployment(s, "web")
        released = await state.release_lock(s, dep.id, "runner r1 was killed", int(creds[0]))
        assert released is not None and released.lock_id == "A"
        assert await state.release_lock(s, dep.id, "again") is None
    assert (await client.get("/api/v1/deployments/web/state")).json()["lock"] is None
    async with db.session() as s:
        events = await runs.list_events(s, int(creds[0]))
    assert events[-1].kind == "state_lock_released"
    assert "runner r1 was killed" in events[-1].message and "lock A" in events[-1].message


async def test_state_body_size_cap(
    anon: httpx.AsyncClient, app: object, creds: tuple[str, str]
) -> None:
    app.state.settings.max_state_bytes = 1000  # type: ignore[attr-defined]
    response = await anon.post(URL, content=doc(1, pad="x" * 2000), auth=creds)
    assert response.status_code == 413
    assert (await anon.get(URL, auth=creds)).status_code == 204


async def test_concurrent_lockers_one_wins(
    anon: httpx.AsyncClient, db: Database, creds: tuple[str, str]
) -> None:
    contenders = [creds] + [
        (str(i), t) for i, t in [await start_run(db, "web", RunStatus.RUNNING) for _ in range(4)]
    ]
    responses = await asyncio.gather(
        *(
            anon.request("LOCK", URL, content=lock_info(f"L{n}"), auth=c)
            for n, c in enumerate(contenders)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 423, 423, 423, 423]
    winner = next(n for n, r in enumerate(responses) if r.status_code == 200)
    assert all(r.json()["ID"] == f"L{winner}" for r in responses if r.status_code == 423)
