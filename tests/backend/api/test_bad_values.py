"""Values JSON cannot hold or a database cannot store, in every field of every route.

Python's JSON parser takes NaN, Infinity and lone surrogates; PostgreSQL refuses NUL and
surrogates in text. Each of these was a 500 somewhere (the validation error's echo, the
cipher, the database). The OpenAPI document is walked: every route that takes a JSON body
gets each bad value in each field of its schema (and as a key and a value of its object
fields), every path and query parameter gets a NUL, a surrogate's bytes and a very long
string. Never a 5xx: a 4xx whose `detail` is one line, and for the values nothing may
store, a 422 naming the field (a query filter that matches nothing may answer 200).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import RunStatus
from backend.state_service import StateService
from protos.iacrunner.v1 import runner_pb2 as pb
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio

# Written into the JSON text as they are: Python's json writes NaN and Infinity bare
# (allow_nan) and a lone surrogate as its \uXXXX escape (ensure_ascii).
NAN, INF, NEG_INF = float("nan"), float("inf"), float("-inf")
UNSTORABLE: dict[str, Any] = {
    "NaN": NAN,
    "Infinity": INF,
    "-Infinity": NEG_INF,
    "lone high surrogate": "\ud800",
    "lone low surrogate inside text": "a\udc80b",
    "NUL": "a\x00b",
}
LONG = "x" * 1_000_000

# A valid body per JSON route: each bad value replaces one field of it, so the refusal is
# about that field. A new JSON route fails the walk until it has one here.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/runners"): {
        "name": "r-new",
        "address": "127.0.0.1:9",
        "token": "t0ken",
        "labels": {"provider": "aws"},
    },
    ("POST", "/api/v1/deployments"): {
        "name": "d-new",
        "tool": "terraform",
        "required_labels": {"provider": "aws"},
        "default_priority": 1,
        "version_constraint": ">= 1.5",
        "auto_approve": "never",
        "require_other_approver": False,
    },
    ("PUT", "/api/v1/deployments/{name}/variables/{key}"): {
        "value": "v",
        "sensitive": True,
        "category": "terraform",
    },
    ("POST", "/api/v1/runs"): {
        "deployment": "web",
        "operation": "plan",
        "priority": 1,
        "auto_approve": False,
        "comment": "c",
        "config_version": 1,
    },
    ("POST", "/api/v1/tokens"): {"name": "ci", "expires_in_days": 3},
    ("PATCH", "/api/v1/deployments/{name}"): {
        "default_priority": 1,
        "auto_approve": "no-destroy",
        "require_other_approver": True,
    },
    ("POST", "/api/v1/runs/{run_id}/approve"): {"comment": "ok"},
    ("POST", "/api/v1/runs/{run_id}/discard"): {"comment": "ok"},
    ("POST", "/api/v1/runs/{run_id}/cancel"): {"comment": "ok"},
    ("POST", "/api/v1/deployments/{name}/state/unlock"): {"comment": "ok"},
    ("POST", "/api/v1/deployments/{name}/schedules"): {
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "kind": "apply",
        "auto_approve": "no-destroy",
        "enabled": True,
    },
    ("PATCH", "/api/v1/deployments/{name}/schedules/{schedule_id}"): {
        "cron": "0 4 * * *",
        "timezone": "UTC",
        "kind": "plan",
        "auto_approve": "never",
        "enabled": False,
    },
    ("POST", "/api/v1/notifications/destinations"): {
        "name": "n-new",
        "url": "https://93.184.215.14/hook",
        "kind": "webhook",
        "events": ["run.failed"],
        "deployment": "web",
        "secret": "s" * 20,
    },
    ("PATCH", "/api/v1/notifications/destinations/{destination_id}"): {
        "enabled": False,
        "events": ["run.failed"],
    },
}
PATH_VALUES = {"name": "web", "key": "greeting", "run_id": "1", "version": "1", "token_id": "1"}
PATH_VALUES |= {"version_id": "1", "deployment": "web", "schedule_id": "1", "destination_id": "1"}


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def json_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the JSON body schema, for every operation taking a JSON body."""
    found = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = resolve(spec, content["application/json"]["schema"])
                # An optional body (`Decision | None`): its object schema.
                options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
                found[(method.upper(), path)] = resolve(spec, options[0])
    return found


def is_object_field(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = resolve(spec, schema)
    options = [resolve(spec, s) for s in schema.get("anyOf", [schema])]
    return any(o.get("type") == "object" for o in options)


def raw(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def fill(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.fixture
async def world(client: httpx.AsyncClient, db: Database) -> tuple[str, str]:
    """A deployment with a config, a variable and a run (its id, and the runner-side id of
    its step), so requests reach past the 404s."""
    await new_deployment(client, "web")
    await upload(client, "web")
    response = await client.put("/api/v1/deployments/web/variables/greeting", json={"value": "x"})
    assert response.status_code == 201
    run_id, step = await start_run(db, "web", RunStatus.RUNNING)
    assert run_id == 1
    return str(run_id), step


def check_refusal(response: httpx.Response, what: str, *, unstorable: bool, field: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:500])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, (what, detail)
    if unstorable:
        assert response.status_code == 422, (what, response.text[:500])
        assert field in detail, (what, field, detail)


async def test_bad_json_values_in_every_field_of_every_route_are_422(
    client: httpx.AsyncClient, world: tuple[str, str]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = json_operations(spec)
    assert set(operations) == set(VALID_BODIES), "a JSON route without a valid body here"
    tally: Counter[str] = Counter()
    for (method, path), schema in operations.items():
        url = fill(path)
        valid = VALID_BODIES[(method, path)]
        for field, field_schema in resolve(spec, schema)["properties"].items():
            for label, value in [*UNSTORABLE.items(), ("very long string", LONG)]:
                shapes = [({**valid, field: value}, "value")]
                if is_object_field(spec, field_schema) and isinstance(value, str):
                    shapes += [
                        ({**valid, field: {"k": value}}, "object value"),
                        ({**valid, field: {value: "v"}}, "object key"),
                    ]
                for body, shape in shapes:
                    response = await client.request(
                        method, url, content=raw(body), headers={"Content-Type": "application/json"}
                    )
                    what = f"{method} {path} {field}={label} ({shape})"
                    check_refusal(response, what, unstorable=label in UNSTORABLE, field=field)
                    tally[f"{method} {path}"] += 1
    # The whole body as one of them, and the same values in arrays.
    for method, path in operations:
        for label, value in UNSTORABLE.items():
            for whole in (value, [value]):
                response = await client.request(
                    method,
                    fill(path),
                    content=raw(whole),
                    headers={"Content-Type": "application/json"},
                )
                check_refusal(response, f"{method} {path} body={label}", unstorable=False, field="")
                tally[f"{method} {path}"] += 1
    assert len(tally) == len(VALID_BODIES) and sum(tally.values()) >= 220, tally
    # Nothing was created by any of them.
    assert [d["name"] for d in (await client.get("/api/v1/deployments")).json()] == ["web"]
    assert (await client.get("/api/v1/runners")).json() == []
    assert (await client.get("/api/v1/notifications/destinations")).json() == []
    assert len((await client.get("/api/v1/runs")).json()) == 1
    assert [t["name"] for t in (await client.get("/api/v1/tokens")).json()] == [
        "bootstrap (IAC_API_TOKEN)"
    ]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"name":"d","default_priority":NaN}', "default_priority", "NaN is not a number"),
        (b'{"name":"d","default_priority":1e999}', "default_priority", "1e999 is not a number"),
        (b'{"name":"\\ud800"}', "name", "lone surrogate (\\ud800)"),
        (b'{"name":"d","required_labels":{"a\\u0000":"b"}}', "required_labels", "NUL"),
    ],
)
async def test_the_refusal_names_the_field_and_the_problem(
    client: httpx.AsyncClient, body: bytes, field: str, message: str
) -> None:
    response = await client.post(
        "/api/v1/deployments", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"'{field}'" in detail and message in detail, detail


async def test_validation_errors_are_one_line_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/runs", json={"deployment": "web", "priority": "high"})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "body field 'operation': Field required; body field 'priority': Input should be a valid "
        "integer, unable to parse string as an integer (got 'high')"
    )
    response = await client.get("/api/v1/runs", params={"limit": "0"})
    assert response.json()["detail"] == (
        "query parameter 'limit': Input should be greater than or equal to 1 (got '0')"
    )


async def test_bad_text_in_every_path_and_query_parameter_is_refused_or_harmless(
    client: httpx.AsyncClient, world: tuple[str, str]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    bad = {"NUL": "%00", "surrogate bytes": "%ED%A0%80", "long": "x" * 20_000}
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            for param in op.get("parameters", []):
                if param["in"] not in ("path", "query"):
                    continue
                for label, value in bad.items():
                    if param["in"] == "path":
                        url = fill(path.replace("{" + param["name"] + "}", value))
                        params = ""
                    else:
                        url, params = fill(path), f"?{quote(param['name'])}={value}"
                    response = await client.request(method.upper(), url + params)
                    what = f"{method} {path} {param['in']} {param['name']}={label}"
                    # A filter that matches nothing may answer 200 (an empty list).
                    assert response.status_code < 500, (what, response.text[:300])
                    if label == "NUL":
                        assert response.status_code == 422, (what, response.text[:300])
                        assert param["name"] in response.json()["detail"], what
                    elif response.status_code >= 400:
                        assert response.json()["detail"], what
                    tried += 1
    assert tried >= 90, tried


async def test_state_and_lock_bodies_refuse_unstorable_text(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """What terraform sends through its runner (a state, a lock's info) with a lone
    surrogate, a NUL or NaN: 400 with the reason, nothing stored."""
    await new_deployment(client, "web")
    await upload(client, "web")
    _, step = await start_run(db, "web", RunStatus.RUNNING, "r1", backend_id="test")
    service = StateService(db, app.state.cipher, "test", 1 << 20, app.state.engine.run_of)
    bodies = {
        "POST": [
            b'{"version":4,"serial":1,"lineage":"\\ud800"}',
            b'{"version":4,"serial":1,"lineage":"a\\u0000"}',
        ],
        "LOCK": [
            b'{"ID":"\\ud800"}',
            b'{"ID":"a\\u0000"}',
            b'{"ID":"x","Who":"a\\udc80"}',
            b'{"ID":"x","Info":NaN}',
        ],
    }
    for method, items in bodies.items():
        for body in items:
            reply = await service.handle("r1", pb.StateCall(run_id=step, method=method, body=body))
            assert reply.status == 400, (method, body, reply.body)
            assert json.loads(reply.body)["detail"], reply.body
    shown = (await client.get("/api/v1/deployments/web/state")).json()
    assert shown == {"lock": None, "versions": []}
