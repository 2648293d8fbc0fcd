"""Roles and scopes as a class: every route of the OpenAPI document × every role × a
deployment inside and outside the token's scope, on SQLite and PostgreSQL. A route that
declares no role fails here (and the app refuses to start with one)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.access import Role, Scope
from backend.db import Database
from backend.models import RunStatus
from tests.backend.api.test_bad_values import VALID_BODIES, json_operations
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio
ROLES = list(Role)
TEAM_A = {"names": [], "labels": {"team": "a"}}


async def make_token(client: httpx.AsyncClient, name: str, role: Role, scope: Any) -> str:
    body = {"name": name, "role": role.value, "scope": scope}
    response = await client.post("/api/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


class World:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, db: Database) -> None:
        self.app, self.client, self.db = app, client, db
        self.runs: dict[str, int] = {}
        self.tokens: dict[tuple[Role, bool], str] = {}  # (role, scoped) -> token
        self.spare_token = 0

    async def build(self) -> None:
        await self.app.state.engine.stop()  # nothing dispatches: the runs stay as made
        for name, team in (("web", "a"), ("other", "b")):
            await new_deployment(self.client, name, labels={"team": team})
            assert (await upload(self.client, name)).status_code == 201
            variable = {"value": "plain-value"}
            response = await self.client.put(
                f"/api/v1/deployments/{name}/variables/greeting", json=variable
            )
            assert response.status_code == 201
            self.runs[name], _ = await start_run(self.db, name, RunStatus.AWAITING_APPROVAL)
        for role in ROLES:
            self.tokens[(role, True)] = await make_token(self.client, f"{role}-a", role, TEAM_A)
            self.tokens[(role, False)] = await make_token(self.client, f"{role}-all", role, None)
        spare = await self.client.post("/api/v1/tokens", json={"name": "spare", "scope": TEAM_A})
        self.spare_token = spare.json()["id"]

    def client_for(self, role: Role, scoped: bool) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {self.tokens[(role, scoped)]}"},
        )

    def url(self, path: str, deployment: str) -> str:
        values = {
            "name": deployment,
            "run_id": str(self.runs[deployment]),
            "key": "greeting",
            "version": "1",
            "version_id": "1",
            "token_id": str(self.spare_token),
            "schedule_id": "1",
        }
        for key, value in values.items():
            path = path.replace("{" + key + "}", value)
        return path


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, db: Database) -> World:
    built = World(app, client, db)
    await built.build()
    return built


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, ops in spec["paths"].items():
        if path.startswith("/api/v1/"):
            found += [(method.upper(), path, op) for method, op in ops.items()]
    return found


async def test_every_route_x_every_role_x_in_and_out_of_scope(world: World) -> None:
    spec = (await world.client.get("/openapi.json")).json()
    bodies = {key: body for key, body in VALID_BODIES.items()}
    json_ops = json_operations(spec)
    checked = 0
    for method, path, op in operations(spec):
        assert "x-iac-role" in op, f"{method} {path} declares no role"
        needed = Role(op["x-iac-role"])
        unscoped_only = op["x-iac-unscoped"]
        about_a_deployment = path.startswith(("/api/v1/deployments/{name}", "/api/v1/runs/{"))
        body = bodies.get((method, path)) if (method, path) in json_ops else None
        if (method, path) == ("POST", "/api/v1/runs"):
            body = {"deployment": "web", "operation": "plan"}
        for role in ROLES:
            for scoped in (True, False):
                async with world.client_for(role, scoped) as http:
                    where = "other" if about_a_deployment and scoped else "web"
                    sent = body
                    if body and "deployment" in body:
                        sent = {**body, "deployment": where}
                    if body and (method, path) == ("POST", "/api/v1/deployments"):
                        sent = {**body, "name": f"new-{role}-{scoped}", "labels": {"team": "a"}}
                    response = await http.request(
                        method, world.url(path, where), json=sent if body else None
                    )
                what = (method, path, role.value, "scoped" if scoped else "unscoped", where)
                allowed = role.includes(needed) and not (unscoped_only and scoped)
                if not allowed:
                    assert response.status_code in (403, 404), (what, response.text)
                    if not (about_a_deployment and scoped):
                        assert response.status_code == 403, (what, response.text)
                elif about_a_deployment and scoped:
                    assert response.status_code == 404, (what, response.text)
                    assert "other" not in response.text or "does not exist" in response.text
                else:
                    assert response.status_code not in (401, 403), (what, response.text)
                checked += 1
    assert checked == 8 * len(operations(spec)) and checked >= 8 * 30, checked


async def test_a_planner_plans_and_nothing_more(world: World) -> None:
    async with world.client_for(Role.PLANNER, True) as http:
        plan = await http.post("/api/v1/runs", json={"deployment": "web", "operation": "plan"})
        assert plan.status_code == 201, plan.text
        assert plan.json()["created_by"] == "planner-a"
        for operation in ("apply", "destroy"):
            refused = await http.post(
                "/api/v1/runs", json={"deployment": "web", "operation": operation}
            )
            assert refused.status_code == 403
            assert f"a {operation} run needs the operator role" in refused.json()["detail"]
        approve = await http.post(f"/api/v1/runs/{world.runs['web']}/approve")
        assert approve.status_code == 403
        variables = (await http.get("/api/v1/deployments/web/variables")).json()
        assert variables[0]["value"] is None, "only an admin reads a variable's value"
        assert (await http.get("/api/v1/deployments/web/state/versions/1")).status_code == 403
        # Outside its scope nothing exists: no name, no run, no list entry.
        names = [d["name"] for d in (await http.get("/api/v1/deployments")).json()]
        assert names == ["web"]
        runs = (await http.get("/api/v1/runs")).json()
        assert {r["deployment"] for r in runs} == {"web"}
        hidden = await http.get(f"/api/v1/runs/{world.runs['other']}")
        assert hidden.status_code == 404
        assert hidden.json()["detail"] == f"run {world.runs['other']} does not exist"
        assert (
            await http.post("/api/v1/runs", json={"deployment": "other", "operation": "plan"})
        ).status_code == 404
        me = (await http.get("/api/v1/me")).json()
        assert me["role"] == "planner" and me["scope"] == TEAM_A
        assert me["may"] == {"viewer": True, "planner": True, "operator": False, "admin": False}
    admin_sees = (await world.client.get("/api/v1/deployments/web/variables")).json()
    assert admin_sees[0]["value"] == "plain-value"


async def test_a_token_makes_tokens_only_within_its_own_role_and_scope(world: World) -> None:
    async with world.client_for(Role.ADMIN, True) as http:
        for body, fragment in (
            ({"name": "wider", "role": "viewer", "scope": {"labels": {}}}, "is wider than"),
            ({"name": "other-team", "scope": {"labels": {"team": "b"}}}, "is wider than"),
            ({"name": "names", "scope": {"names": ["*"]}}, "is wider than"),
        ):
            refused = await http.post("/api/v1/tokens", json=body)
            assert refused.status_code == 403, (body, refused.text)
            assert fragment in refused.json()["detail"]
        narrower = {"labels": {"team": "a", "env": "prod"}, "names": ["web*"]}
        made = await http.post("/api/v1/tokens", json={"name": "n", "scope": narrower})
        assert made.status_code == 201 and made.json()["scope"] == narrower
        inherited = await http.post("/api/v1/tokens", json={"name": "i", "role": "admin"})
        assert inherited.json()["scope"] == TEAM_A
        # The unscoped tokens are not its to see or revoke.
        listed = {t["name"] for t in (await http.get("/api/v1/tokens")).json()}
        assert "admin-all" not in listed and "admin-a" in listed
        first = await http.delete("/api/v1/tokens/1")
        assert first.status_code == 404
        # Runners serve every deployment: only an unscoped admin registers one.
        runner = {"name": "r9", "address": "127.0.0.1:9"}
        assert (await http.post("/api/v1/runners", json=runner)).status_code == 403
        # A deployment it creates must be inside its scope.
        outside = await http.post(
            "/api/v1/deployments", json={"name": "x", "labels": {"team": "b"}}
        )
        assert outside.status_code == 403
        moved = await http.patch("/api/v1/deployments/web", json={"labels": {"team": "b"}})
        assert moved.status_code == 403
        # A name outside its scope is "not available", nothing more.
        taken = await http.post(
            "/api/v1/deployments", json={"name": "other", "labels": {"team": "a"}}
        )
        assert taken.status_code == 409
        assert taken.json()["detail"] == "the name 'other' is not available"
    async with world.client_for(Role.OPERATOR, False) as http:
        raise_itself = await http.post("/api/v1/tokens", json={"name": "up", "role": "admin"})
        assert raise_itself.status_code == 403
    for reserved in ("system", "anonymous"):
        bad = await world.client.post("/api/v1/tokens", json={"name": reserved})
        assert bad.status_code == 422 and "audit log's own actor" in bad.text
    # A token never outlives the token that made it.
    short = await world.client.post(
        "/api/v1/tokens", json={"name": "short", "role": "admin", "expires_in_days": 2}
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {short.json()['token']}"},
    ) as http:
        child = await http.post("/api/v1/tokens", json={"name": "child", "expires_in_days": 30})
    assert child.json()["expires_at"] == short.json()["expires_at"]


def test_scope_within_is_a_subset_relation() -> None:
    team = Scope((), {"team": "a"})
    assert Scope((), {"team": "a", "env": "prod"}).within(team)
    assert not Scope().within(team)
    assert Scope(("pay-*",), {}).within(Scope(("pay-*", "web"), {}))
    assert Scope(("pay-api",), {}).within(Scope(("pay-*",), {}))
    assert not Scope(("pay*",), {}).within(Scope(("pay-*",), {}))
    assert not Scope(("*",), {}).within(Scope(("pay-*",), {}))
    assert team.covers("anything", {"team": "a"}) and not team.covers("x", {"team": "b"})
    assert Scope(("pay-*",), {}).covers("pay-api", {}) and not Scope(("pay-*",), {}).covers(
        "web", {}
    )
