"""Approving safely, through the API on SQLite and PostgreSQL with no runner: the stale-plan
guard (newer state, newer configuration, the plan TTL), discard, four eyes, who did what,
and the approval policies' decision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import Run, RunStatus, StateLock, StateVersion, utcnow
from backend.store.approval import policy_holds, stale_reason
from tests.backend.archives import tar_gz
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio


async def awaiting(db: Database, deployment: str = "web", **values: Any) -> int:
    """A run of `deployment` whose plan ended now and waits for approval."""
    run_id, _ = await start_run(db, deployment, RunStatus.AWAITING_APPROVAL)
    async with db.session() as s:
        run = await s.get_one(Run, run_id)
        run.claimed_by = None
        run.runner_run_id = None
        run.has_changes = True
        run.planned_at = utcnow()
        run.plan_sha256 = "ab" * 32
        run.created_by = "someone else"
        for key, value in values.items():
            setattr(run, key, value)
    return run_id


@pytest.fixture
async def web(app: FastAPI, client: httpx.AsyncClient) -> str:
    await app.state.engine.stop()  # nothing dispatches the approved runs: they stay applying
    await new_deployment(client, "web")
    assert (await upload(client, "web")).status_code == 201
    return "web"


async def test_an_approval_is_recorded_with_its_actor_and_comment(
    client: httpx.AsyncClient, db: Database, web: str
) -> None:
    run_id = await awaiting(db)
    response = await client.post(f"/api/v1/runs/{run_id}/approve", json={"comment": "LGTM"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applying"
    events = (await client.get(f"/api/v1/runs/{run_id}")).json()["events"]
    approved = next(e for e in events if e["kind"] == "approved")
    assert approved["actor"].endswith("(IAC_API_TOKEN)")
    assert approved["comment"] == "LGTM"
    # Without a body too.
    other = await awaiting(db)
    assert (await client.post(f"/api/v1/runs/{other}/approve")).status_code == 200


@pytest.mark.parametrize("stale", ["state", "config", "ttl"])
async def test_a_stale_plan_is_refused_with_the_reason_and_the_way_out(
    client: httpx.AsyncClient, db: Database, web: str, stale: str
) -> None:
    run_id = await awaiting(db)
    if stale == "state":  # e.g. an earlier run's unsaved state handed over by its runner
        async with db.session() as s:
            deployment_id = (await s.get_one(Run, run_id)).deployment_id
            s.add(StateVersion(deployment_id=deployment_id, serial=1, lineage="l", data=b"{}",
                               md5="m", run_id=None))  # fmt: skip
        expected = "the state of 'web' changed after this plan was made"
    elif stale == "config":
        # The same files again change nothing; other files do.
        assert (await upload(client, "web")).status_code == 201
        async with db.session() as s:
            run = await s.get_one(Run, run_id)
            assert await stale_reason(s, run, 86400) == ""
        other = tar_gz({"main.tf": 'output "x" { value = 2 }\n'})
        assert (await upload(client, "web", other)).status_code == 201
        expected = "a newer configuration (v3) was uploaded after this plan's (v1)"
    else:
        async with db.session() as s:
            (await s.get_one(Run, run_id)).planned_at = utcnow() - timedelta(hours=25)
        expected = "the plan is older than the plan TTL (86400 s, IAC_PLAN_TTL"
    before = (await client.get(f"/api/v1/runs/{run_id}")).json()
    before.pop("waiting_seconds")
    response = await client.post(f"/api/v1/runs/{run_id}/approve")
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert expected in detail and "re-plan with `iac apply web`" in detail, detail
    after = (await client.get(f"/api/v1/runs/{run_id}")).json()
    after.pop("waiting_seconds")
    assert after == before, "a refused approval changes nothing"


async def test_discard_ends_an_awaiting_plan_and_only_such_a_run(
    client: httpx.AsyncClient, db: Database, web: str
) -> None:
    run_id = await awaiting(db)
    response = await client.post(f"/api/v1/runs/{run_id}/discard", json={"comment": "not now"})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "discarded" and run["ended_at"] is not None
    events = (await client.get(f"/api/v1/runs/{run_id}")).json()["events"]
    assert events[-1]["kind"] == "discarded" and events[-1]["comment"] == "not now"
    again = await client.post(f"/api/v1/runs/{run_id}/discard")
    assert again.status_code == 409
    assert "only a run awaiting approval can be discarded" in again.json()["detail"]
    assert (await client.post(f"/api/v1/runs/{run_id}/approve")).status_code == 409
    # The deployment is free again: a new run may start.
    assert await client.post("/api/v1/runs", json={"deployment": "web", "operation": "plan"})


async def test_require_other_approver_refuses_the_run_s_creator(
    client: httpx.AsyncClient, app: FastAPI, db: Database, web: str
) -> None:
    patched = await client.patch("/api/v1/deployments/web", json={"require_other_approver": True})
    assert patched.status_code == 200 and patched.json()["require_other_approver"] is True
    # Four eyes leave no way around them: no auto-approval, per run or by default.
    for policy in ("always", "no-destroy", True):
        body = {"deployment": "web", "operation": "apply", "auto_approve": policy}
        refused = await client.post("/api/v1/runs", json=body)
        assert refused.status_code == 409 and "cannot be auto-approved" in refused.text
    loosened = await client.patch("/api/v1/deployments/web", json={"auto_approve": "always"})
    assert loosened.status_code == 422 and "needs auto_approve 'never'" in loosened.text
    created = await client.post("/api/v1/runs", json={"deployment": "web", "operation": "apply"})
    creator = created.json()["created_by"]
    run_id = await awaiting(db, created_by=creator)
    refused = await client.post(f"/api/v1/runs/{run_id}/approve")
    assert refused.status_code == 409
    assert "requires another approver" in refused.json()["detail"]
    body = {"name": "reviewer", "role": "operator"}
    token = (await client.post("/api/v1/tokens", json=body)).json()["token"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    ) as reviewer:
        response = await reviewer.post(f"/api/v1/runs/{run_id}/approve")
    assert response.status_code == 200, response.text
    events = (await client.get(f"/api/v1/runs/{run_id}")).json()["events"]
    assert next(e for e in events if e["kind"] == "approved")["actor"] == "reviewer"


async def test_policies_default_from_the_deployment_and_bad_ones_are_422(
    client: httpx.AsyncClient, web: str
) -> None:
    await client.patch("/api/v1/deployments/web", json={"auto_approve": "no-destroy"})
    run = await client.post("/api/v1/runs", json={"deployment": "web", "operation": "apply"})
    assert run.json()["auto_approve"] == "no-destroy"
    for value, policy in ((True, "always"), (False, "never"), ("always", "always")):
        body = {"deployment": "web", "operation": "plan", "auto_approve": value}
        assert (await client.post("/api/v1/runs", json=body)).json()["auto_approve"] == policy
    bad = await client.post(
        "/api/v1/runs", json={"deployment": "web", "operation": "apply", "auto_approve": "maybe"}
    )
    assert bad.status_code == 422
    bad = await client.patch("/api/v1/deployments/web", json={"auto_approve": "sometimes"})
    assert bad.status_code == 422
    assert (await client.get("/api/v1/deployments/web")).json()["auto_approve"] == "no-destroy"


def test_no_destroy_applies_only_plans_that_delete_and_replace_nothing() -> None:
    creates = {"add": 2, "change": 1, "destroy": 0, "replace": 0}
    assert policy_holds("no-destroy", creates) == (True, "")
    assert policy_holds("no-destroy", {**creates, "destroy": 1})[0] is False
    held, why = policy_holds("no-destroy", {**creates, "replace": 1})
    assert not held and why == "no-destroy: the plan destroys 0 and replaces 1"
    assert policy_holds("no-destroy", None) == (
        False,
        "no-destroy: the plan's changes could not be read",
    )
    assert policy_holds("always", None) == (True, "")
    assert policy_holds("never", creates) == (False, "")


async def test_force_unlock_releases_only_a_lock_whose_holder_is_gone(
    client: httpx.AsyncClient, db: Database, web: str
) -> None:
    nothing = await client.post("/api/v1/deployments/web/state/unlock")
    assert nothing.status_code == 409 and "is not locked" in nothing.json()["detail"]
    run_id, _ = await start_run(db, "web", RunStatus.RUNNING, "r1", backend_id="elsewhere")
    async with db.session() as s:
        deployment_id = (await s.get_one(Run, run_id)).deployment_id
        s.add(StateLock(deployment_id=deployment_id, lock_id="L1", info={}, run_id=run_id))
    busy = await client.post("/api/v1/deployments/web/state/unlock")
    assert busy.status_code == 409
    assert f"locked by run {run_id}, which is running: cancel it" in busy.json()["detail"]
    async with db.session() as s:
        (await s.get_one(Run, run_id)).status = RunStatus.FAILED.value
    done = await client.post(
        "/api/v1/deployments/web/state/unlock", json={"comment": "runner host lost"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["lock"] is None
    events = (await client.get(f"/api/v1/runs/{run_id}")).json()["events"]
    released = events[-1]
    assert released["kind"] == "state_lock_released"
    assert released["actor"].endswith("(IAC_API_TOKEN)")
    assert released["comment"] == "runner host lost"
    assert "force-unlocked by" in released["message"]
