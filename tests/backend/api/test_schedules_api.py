"""The schedule endpoints through the in-process app, on SQLite and PostgreSQL: what a
schedule shows (next due time in UTC, the next few in its zone), changes, refusals (one
line, the right status, nothing written), roles and scopes, and "run now"."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.access import Role
from backend.config import Settings
from tests.backend.api.test_access import make_token
from tests.backend.conftest import make_settings
from tests.backend.helpers import new_deployment, upload

pytestmark = pytest.mark.anyio
BASE = "/api/v1/deployments"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # No pass of the app's own scheduler during a test: these test the API, not due times.
    return make_settings(db_url, tmp_path / "data", schedule_interval=3600)


def as_token(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    )


async def create(client: httpx.AsyncClient, deployment: str, **body: Any) -> httpx.Response:
    return await client.post(f"{BASE}/{deployment}/schedules", json=body)


async def test_a_schedule_shows_its_due_times_in_utc_and_in_its_zone(
    client: httpx.AsyncClient,
) -> None:
    await new_deployment(client, "web")
    made = await create(client, "web", cron="30 2 * * *", timezone="Europe/Paris")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["kind"] == "drift" and body["operation"] == "drift"
    assert (body["cron"], body["timezone"], body["enabled"]) == ("30 2 * * *", "Europe/Paris", True)
    assert body["description"] == "At 02:30 every day"
    assert body["created_by"] == "bootstrap (IAC_API_TOKEN)"
    assert body["next_run_at"].endswith("Z")
    upcoming = [datetime.fromisoformat(t) for t in body["upcoming"]]
    assert len(upcoming) == 3
    assert upcoming[0] == datetime.fromisoformat(body["next_run_at"])
    # Paris wall-clock 02:30 each day (03:00 on a spring-forward day), with Paris's offset.
    assert all((t.hour, t.minute) in ((2, 30), (3, 0)) for t in upcoming), body["upcoming"]
    assert {str(t.utcoffset()) for t in upcoming} <= {"1:00:00", "2:00:00"}
    sid = body["id"]
    assert (await client.get(f"{BASE}/web/schedules/{sid}")).json() == body
    assert (await client.get(f"{BASE}/web/schedules")).json() == [body]
    assert (await client.get("/api/v1/schedules")).json() == [body]


async def test_change_disable_enable_and_remove(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "web")
    sid = (await create(client, "web", cron="0 3 * * *", kind="plan")).json()["id"]
    url = f"{BASE}/web/schedules/{sid}"
    off = await client.patch(url, json={"enabled": False})
    assert off.status_code == 200, off.text
    assert (off.json()["enabled"], off.json()["next_run_at"], off.json()["upcoming"]) == (
        False,
        None,
        [],
    )
    changed = (await client.patch(url, json={"cron": "15 4 * * 1", "enabled": True})).json()
    assert changed["enabled"] and changed["description"] == "At 04:15 on Monday"
    assert datetime.fromisoformat(changed["next_run_at"]).weekday() == 0
    applied = (await client.patch(url, json={"kind": "apply", "auto_approve": "always"})).json()
    assert (applied["kind"], applied["auto_approve"]) == ("apply", "always")
    # Back to a plan: the approval policy, an apply's alone, goes back to never.
    planned = (await client.patch(url, json={"kind": "plan"})).json()
    assert (planned["kind"], planned["auto_approve"]) == ("plan", "never")
    assert (await client.delete(url)).status_code == 204
    gone = await client.get(url)
    assert gone.status_code == 404 and gone.json()["detail"] == (
        f"deployment 'web' has no schedule {sid}"
    )
    assert (await client.delete(url)).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"cron": "0 0 3 * * *"}, 422, "a seconds field is not supported"),
        ({"cron": "@reboot"}, 422, "'@reboot' is not supported"),
        ({"cron": "0 3 * *"}, 422, "has 4 fields: give 5"),
        ({"cron": "0 3 * * 8"}, 422, "Bad day-of-week"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, 422, "time zone 'Europe/Pariss'"),
        ({"cron": "0 3 * * *", "kind": "destroy"}, 422, "kind"),
        ({"cron": "0 3 * * *", "kind": "plan", "auto_approve": "always"}, 422, "apply schedules"),
        ({"cron": "0 3 * * *", "auto_approve": "sometimes"}, 422, "auto_approve"),
        ({"cron": "x" * 200}, 422, "cron"),
        ({"timezone": "UTC"}, 422, "cron"),
        ({"cron": "0 3 * * *", "every": "day"}, 422, "every"),
    ],
)
async def test_bad_schedules_are_refused_in_one_line_and_nothing_is_written(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, words: str
) -> None:
    await new_deployment(client, "web")
    refused = await create(client, "web", **body)
    assert refused.status_code == status, refused.text
    detail = refused.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    assert (await client.get(f"{BASE}/web/schedules")).json() == []


async def test_four_eyes_and_unknown_names(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "prod", require_other_approver=True)
    refused = await create(client, "prod", cron="0 3 * * *", kind="apply", auto_approve="always")
    assert refused.status_code == 409
    assert "requires another approver" in refused.json()["detail"]
    ok = await create(client, "prod", cron="0 3 * * *", kind="apply")
    assert ok.status_code == 201
    sid = ok.json()["id"]
    patched = await client.patch(f"{BASE}/prod/schedules/{sid}", json={"auto_approve": "always"})
    assert patched.status_code == 409
    assert (await client.get(f"{BASE}/prod/schedules/{sid}")).json()["auto_approve"] == "never"
    # Four eyes turned on after an auto-approved apply schedule was made: it can be turned
    # off, not on again as it is.
    await new_deployment(client, "later")
    sid2 = (
        await create(client, "later", cron="0 3 * * *", kind="apply", auto_approve="always")
    ).json()["id"]
    four_eyes = {"require_other_approver": True, "auto_approve": "never"}
    assert (await client.patch(f"{BASE}/later", json=four_eyes)).status_code == 200
    url = f"{BASE}/later/schedules/{sid2}"
    assert (await client.patch(url, json={"enabled": False})).status_code == 200
    assert (await client.patch(url, json={"enabled": True})).status_code == 409
    fixed = await client.patch(url, json={"enabled": True, "auto_approve": "never"})
    assert fixed.status_code == 200 and fixed.json()["enabled"]
    missing = await create(client, "nope", cron="0 3 * * *")
    assert missing.status_code == 404 and "deployment 'nope' does not exist" in missing.text
    assert (await client.get(f"{BASE}/prod/schedules/999")).status_code == 404


async def test_run_now_queues_the_schedule_s_run_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await app.state.engine.stop()  # nothing dispatches: the run stays queued
    await new_deployment(client, "web")
    assert (await upload(client, "web")).status_code == 201
    sid = (await create(client, "web", cron="0 3 * * *", kind="plan")).json()["id"]
    url = f"{BASE}/web/schedules/{sid}/trigger"
    triggered = await client.post(url)
    assert triggered.status_code == 201, triggered.text
    run_id = triggered.json()["run_id"]
    assert triggered.json()["schedule"]["last_run_id"] == run_id
    run = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["operation"], run["status"]) == ("plan", "queued")
    assert run["created_by"] == "bootstrap (IAC_API_TOKEN)"
    assert run["events"][0]["comment"] == "run now"
    again = await client.post(url)
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"schedule {sid} queues nothing now: run {run_id} of this schedule is still queued"
    )
    assert len((await client.get("/api/v1/runs")).json()) == 1
    empty = await new_deployment(client, "empty")
    sid2 = (await create(client, empty["name"], cron="0 3 * * *", kind="plan")).json()["id"]
    no_config = await client.post(f"{BASE}/empty/schedules/{sid2}/trigger")
    assert no_config.status_code == 409 and "configuration" in no_config.json()["detail"]
    audit = (await client.get("/api/v1/audit", params={"action": "trigger"})).json()
    assert sorted((a["target"], a["result"][:3]) for a in audit) == [
        (f"name=empty schedule_id={sid2}", "409"),
        (f"name=web schedule_id={sid}", "201"),
        (f"name=web schedule_id={sid}", "409"),
    ]


async def test_roles_and_scopes(client: httpx.AsyncClient, app: FastAPI) -> None:
    await app.state.engine.stop()
    for name, team in (("web", "a"), ("other", "b")):
        await new_deployment(client, name, labels={"team": team})
        assert (await upload(client, name)).status_code == 201
    plan = (await create(client, "web", cron="0 3 * * *", kind="plan")).json()["id"]
    apply = (await create(client, "web", cron="0 4 * * *", kind="apply")).json()["id"]
    hidden = (await create(client, "other", cron="0 5 * * *")).json()["id"]
    team_a = {"names": [], "labels": {"team": "a"}}
    tokens = {
        role: await make_token(client, f"{role}-a", role, team_a)
        for role in (Role.VIEWER, Role.PLANNER, Role.OPERATOR)
    }
    async with as_token(app, tokens[Role.VIEWER]) as viewer:
        assert (await viewer.get(f"{BASE}/web/schedules")).status_code == 200
        listed = (await viewer.get("/api/v1/schedules")).json()
        assert [s["id"] for s in listed] == [plan, apply]
        assert (await viewer.get(f"{BASE}/other/schedules/{hidden}")).status_code == 404
        assert (await create(viewer, "web", cron="0 6 * * *")).status_code == 403
    async with as_token(app, tokens[Role.PLANNER]) as planner:
        assert (await create(planner, "web", cron="0 6 * * *")).status_code == 403
        ran = await planner.post(f"{BASE}/web/schedules/{plan}/trigger")
        assert ran.status_code == 201, ran.text
        refused = await planner.post(f"{BASE}/web/schedules/{apply}/trigger")
        assert refused.status_code == 403
        assert "an apply schedule needs the operator role" in refused.json()["detail"]
    async with as_token(app, tokens[Role.OPERATOR]) as operator:
        made = await create(operator, "web", cron="0 6 * * *", kind="apply", auto_approve="always")
        assert made.status_code == 201 and made.json()["created_by"] == "operator-a"
        assert (await operator.post(f"{BASE}/web/schedules/{apply}/trigger")).status_code == 201
        assert (await create(operator, "other", cron="0 6 * * *")).status_code == 404
        out_of_scope = await operator.delete(f"{BASE}/other/schedules/{hidden}")
        assert out_of_scope.status_code == 404
    assert (await client.get(f"{BASE}/other/schedules/{hidden}")).status_code == 200


async def test_a_deleted_deployment_s_schedules_are_hidden(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "old")
    await new_deployment(client, "new")
    await create(client, "old", cron="0 3 * * *")
    kept = (await create(client, "new", cron="0 3 * * *")).json()["id"]
    assert (await client.delete(f"{BASE}/old")).status_code == 200
    assert (await client.get(f"{BASE}/old/schedules")).status_code == 404
    assert [s["id"] for s in (await client.get("/api/v1/schedules")).json()] == [kept]
    assert (await client.post(f"{BASE}/old/restore")).status_code == 200
    assert len((await client.get("/api/v1/schedules")).json()) == 2
