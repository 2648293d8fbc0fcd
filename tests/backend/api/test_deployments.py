"""Deployment endpoints and configuration archive uploads."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import RunStatus, StateLock
from backend.store import deployments, runs
from tests.backend.archives import MAIN_TF, names_in, tar_gz, zip_bytes
from tests.backend.helpers import new_deployment, snapshot, start_run, upload

pytestmark = pytest.mark.anyio


async def test_create_list_get_delete(client: httpx.AsyncClient) -> None:
    out = await new_deployment(
        client,
        "web",
        tool="tofu",
        required_labels={"provider": "aws"},
        default_priority=5,
        version_constraint=">= 1.5,< 2.0",
    )
    assert out["tool"] == "tofu"
    assert out["required_labels"] == {"provider": "aws"}
    assert out["default_priority"] == 5
    assert out["version_constraint"] == ">= 1.5, < 2.0"
    await new_deployment(client, "api")
    assert [d["name"] for d in (await client.get("/api/v1/deployments")).json()] == ["api", "web"]
    assert (await client.get("/api/v1/deployments/web")).json() == {**out, "managed_resources": 0}
    assert (await client.delete("/api/v1/deployments/web")).status_code == 200
    assert (await client.get("/api/v1/deployments/web")).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "has space"}, "deployment name"),
        ({"name": "-dash"}, "deployment name"),
        ({"name": "x" * 65}, "at most 64"),
        ({"name": "d", "tool": "pulumi"}, "'terraform' or 'tofu'"),
        ({"name": "d", "required_labels": {"k": 1}}, "valid string"),
        ({"name": "d", "required_labels": {"no way": "x"}}, "key"),
        ({"name": "d", "default_priority": 10**6}, "out of range"),
        ({"name": "d", "default_priority": "high"}, "valid integer"),
        ({"name": "d", "version_constraint": "latest please"}, "version constraint"),
        ({"name": "d", "colour": "blue"}, "Extra inputs"),
        ({}, "Field required"),
    ],
)
async def test_bad_deployments_change_nothing(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    before = await snapshot(client, "/api/v1/deployments")
    response = await client.post("/api/v1/deployments", json=body)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"])
    assert await snapshot(client, "/api/v1/deployments") == before


async def test_not_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/deployments", content=b"name=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 422
    assert (await client.get("/api/v1/deployments")).json() == []


async def test_duplicate_is_409(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "web", default_priority=1)
    response = await client.post("/api/v1/deployments", json={"name": "web"})
    assert response.status_code == 409
    assert response.json()["detail"] == "deployment 'web' already exists"
    assert (await client.get("/api/v1/deployments/web")).json()["default_priority"] == 1


async def test_unknown_deployment_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v1/deployments/nope"),
        ("DELETE", "/api/v1/deployments/nope"),
        ("GET", "/api/v1/deployments/nope/config"),
        ("POST", "/api/v1/deployments/nope/config"),
        ("GET", "/api/v1/deployments/nope/variables"),
        ("PUT", "/api/v1/deployments/nope/variables/x"),
        ("GET", "/api/v1/deployments/nope/state"),
    ]:
        kwargs: dict[str, object] = {}
        if method == "PUT":
            kwargs["json"] = {"value": "v"}
        if method == "POST":
            kwargs["content"] = tar_gz()
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == "deployment 'nope' does not exist"


async def test_delete_refused_while_a_run_is_active(
    client: httpx.AsyncClient, db: Database
) -> None:
    await new_deployment(client, "web")
    await upload(client, "web")
    for status in (RunStatus.QUEUED, RunStatus.AWAITING_APPROVAL):
        run_id, _ = await start_run(db, "web", status)
        response = await client.delete("/api/v1/deployments/web")
        assert response.status_code == 409
        assert f"has active runs ({run_id})" in response.json()["detail"]
        async with db.session() as s:
            run = await runs.get_run(s, run_id)
            run.status = RunStatus.SUCCEEDED.value
    assert (await client.get("/api/v1/deployments/web")).status_code == 200


async def test_delete_refused_while_state_is_locked(
    client: httpx.AsyncClient, db: Database
) -> None:
    dep = await new_deployment(client, "web")
    async with db.session() as s:
        d = await deployments.get_deployment(s, dep["name"])
        s.add(StateLock(deployment_id=d.id, lock_id="abc", info={"ID": "abc"}))
    response = await client.delete("/api/v1/deployments/web")
    assert response.status_code == 409
    assert "locked" in response.json()["detail"]


async def test_upload_raw_multipart_and_zip_make_new_versions(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "web")
    first = await upload(client, "web")
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    second = await client.post(
        "/api/v1/deployments/web/config",
        files={"file": ("c.tgz", tar_gz({"main.tf": MAIN_TF, "x.tf": b""}), "application/gzip")},
    )
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    third = await client.post(
        "/api/v1/deployments/web/config",
        content=zip_bytes(),
        headers={"Content-Type": "application/zip"},
    )
    assert third.status_code == 201, third.text
    listed = (await client.get("/api/v1/deployments/web/config")).json()
    assert [v["version"] for v in listed] == [3, 2, 1]
    assert listed[0]["sha256"] == first.json()["sha256"]  # same files, same normal form
    archive = await client.get("/api/v1/deployments/web/config/2")
    assert archive.headers["content-type"] == "application/gzip"
    assert names_in(archive.content) == {"main.tf": MAIN_TF, "x.tf": b""}
    assert len(archive.content) == listed[1]["size"]
    assert (await client.get("/api/v1/deployments/web/config/9")).status_code == 404


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 422, "empty upload"),
        (b"hello", 422, "tar.gz or zip"),
        (tar_gz({"../x.tf": b""}), 422, "'..'"),
        (tar_gz({"README": b""}), 422, "no *.tf or *.tofu"),
        (b"\x1f\x8b" + b"\0" * (200 * 1024), 413, "larger than the limit"),
    ],
)
async def test_bad_uploads_change_nothing(
    client: httpx.AsyncClient, app: FastAPI, data: bytes, status: int, message: str
) -> None:
    await new_deployment(client, "web")
    await upload(client, "web")
    app.state.settings.max_config_bytes = 100 * 1024
    before = await snapshot(client, "/api/v1/deployments/web/config")
    response = await upload(client, "web", data)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    # Also as multipart, where the archive must be in the field 'file'.
    wrong_field = await client.post(
        "/api/v1/deployments/web/config", files={"archive": ("c.tgz", tar_gz())}
    )
    assert wrong_field.status_code == 422
    assert "field named 'file'" in wrong_field.json()["detail"]
    assert await snapshot(client, "/api/v1/deployments/web/config") == before


async def test_concurrent_uploads_get_distinct_versions(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "web")
    files = [{"main.tf": MAIN_TF, f"f{i}.tf": b""} for i in range(6)]
    responses = await asyncio.gather(*(upload(client, "web", tar_gz(f)) for f in files))
    assert [r.status_code for r in responses] == [201] * 6
    assert sorted(r.json()["version"] for r in responses) == [1, 2, 3, 4, 5, 6]


async def test_concurrent_creates_of_one_name_one_wins(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post("/api/v1/deployments", json={"name": "web"}) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    assert len((await client.get("/api/v1/deployments")).json()) == 1
