"""Runner registry endpoints and the runners file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.crypto import Cipher
from backend.db import Database
from backend.errors import Invalid
from backend.models import Runner, RunStatus
from backend.store import runners
from tests.backend.conftest import ENCRYPTION_KEY, make_settings
from tests.backend.helpers import new_deployment, snapshot, start_run, upload

pytestmark = pytest.mark.anyio

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


async def test_register_list_get_delete(client: httpx.AsyncClient, db: Database) -> None:
    body = {
        "name": "aws-1",
        "address": "127.0.0.1:50051",
        "token": "runner-secret",
        "tls_ca_pem": PEM,
        "labels": {"provider": "aws", "env": "prod"},
    }
    created = await client.post("/api/v1/runners", json=body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["name"] == "aws-1"
    assert out["status"] == "unknown"
    assert out["has_token"] is True and out["tls"] is True
    assert "runner-secret" not in created.text
    assert out["labels"] == {"provider": "aws", "env": "prod"}

    listed = (await client.get("/api/v1/runners")).json()
    assert [r["name"] for r in listed] == ["aws-1"]
    assert (await client.get("/api/v1/runners/aws-1")).json() == out

    async with db.session() as s:
        row = await s.get(Runner, "aws-1")
        assert row is not None and row.token_encrypted is not None
        assert b"runner-secret" not in row.token_encrypted
        conn = runners.runner_connection(row, Cipher(ENCRYPTION_KEY))
        assert conn.token == "runner-secret" and conn.address == "127.0.0.1:50051"

    assert (await client.delete("/api/v1/runners/aws-1")).status_code == 204
    assert (await client.get("/api/v1/runners/aws-1")).status_code == 404
    assert (await client.get("/api/v1/runners")).json() == []


async def test_record_polls(client: httpx.AsyncClient, db: Database) -> None:
    for name in ("r1", "r2"):
        await client.post("/api/v1/runners", json={"name": name, "address": "localhost:1"})
    async with db.session() as s:
        rows = await runners.record_polls(
            s,
            {
                "r1": ("healthy", {"max_concurrent": 4}),
                "r2": ("unhealthy", None),
                "gone": ("healthy", {}),  # removed meanwhile: nothing to record
            },
        )
        assert sorted(r.id for r in rows) == ["r1", "r2"]
    out = (await client.get("/api/v1/runners/r1")).json()
    assert out["status"] == "healthy" and out["info"] == {"max_concurrent": 4}
    assert out["last_seen"] is not None
    out = (await client.get("/api/v1/runners/r2")).json()
    assert out["status"] == "unhealthy" and out["last_seen"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "bad name", "address": "h:1"}, "runner name"),
        ({"name": "", "address": "h:1"}, "runner name"),
        ({"name": "r", "address": "no-port"}, "host:port"),
        ({"name": "r", "address": "h:70000"}, "host:port"),
        ({"name": "r", "address": "h:1", "labels": {"bad key!": "x"}}, "key"),
        ({"name": "r", "address": "h:1", "labels": {"k": "sp ace"}}, "value"),
        ({"name": "r", "address": "h:1", "tls_ca_pem": "not a pem"}, "PEM"),
        ({"name": "r", "address": "h:1", "tls_cert_pem": PEM}, "go together"),
        ({"name": "r", "address": "h:1", "token": ""}, "token"),
        ({"name": "r", "address": "h:1", "unknown": 1}, "Extra inputs"),
        ({"address": "h:1"}, "Field required"),
    ],
)
async def test_bad_registrations_change_nothing(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    before = await snapshot(client, "/api/v1/runners")
    response = await client.post("/api/v1/runners", json=body)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"])
    assert await snapshot(client, "/api/v1/runners") == before


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    body = {"name": "r1", "address": "h:1"}
    assert (await client.post("/api/v1/runners", json=body)).status_code == 201
    response = await client.post("/api/v1/runners", json={**body, "address": "other:2"})
    assert response.status_code == 409
    assert "already registered" in response.json()["detail"]
    assert (await client.get("/api/v1/runners/r1")).json()["address"] == "h:1"


async def test_unknown_runner_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/api/v1/runners/nope"),
        await client.delete("/api/v1/runners/nope"),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == "runner 'nope' is not registered"


async def test_runner_with_active_run_cannot_be_removed(
    client: httpx.AsyncClient, db: Database
) -> None:
    await client.post("/api/v1/runners", json={"name": "r1", "address": "h:1"})
    await new_deployment(client, "web")
    await upload(client, "web")
    run_id, _ = await start_run(db, "web", RunStatus.RUNNING, runner="r1")
    response = await client.delete("/api/v1/runners/r1")
    assert response.status_code == 409
    assert str(run_id) in response.json()["detail"]
    assert (await client.get("/api/v1/runners/r1")).status_code == 200


async def test_token_without_encryption_key_is_refused(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, encryption_key=None)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            c.headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"  # type: ignore[union-attr]
            response = await c.post(
                "/api/v1/runners", json={"name": "r", "address": "h:1", "token": "s"}
            )
            assert response.status_code == 422
            assert "ENCRYPTION_KEY" in response.json()["detail"]
            assert "generate-encryption-key.sh" in response.json()["detail"]
            assert (await c.get("/api/v1/runners")).json() == []
            # Without secrets, a runner registers fine.
            ok = await c.post("/api/v1/runners", json={"name": "r", "address": "h:1"})
            assert ok.status_code == 201


async def test_runners_file_is_applied_on_start(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "runners.json"
    path.write_text(
        json.dumps(
            {
                "runners": [
                    {"name": "aws-1", "address": "10.0.0.1:50051", "labels": {"provider": "aws"}},
                    {"name": "gcp-1", "address": "10.0.0.2:50051", "token": "t0ken"},
                ]
            }
        )
    )
    settings = make_settings(db_url, tmp_path, runners_file=path)
    for _ in range(2):  # applying it again on the next start updates, never duplicates
        app = create_app(settings)
        async with app.router.lifespan_context(app), app.state.db.session() as s:
            rows = await runners.list_runners(s)
            assert [(r.id, r.address) for r in rows] == [
                ("aws-1", "10.0.0.1:50051"),
                ("gcp-1", "10.0.0.2:50051"),
            ]
            assert rows[0].labels == {"provider": "aws"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"runners": {}}', "must hold a list"),
        ('[{"name": "x"}]', "needs at least 'name' and 'address'"),
        ('[{"name": "x", "address": "h:1", "colour": "red"}]', "unknown keys"),
        ('[{"name": "x y", "address": "h:1"}]', "runner name"),
    ],
)
def test_bad_runners_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "runners.json"
    path.write_text(content)
    with pytest.raises(Invalid, match=message):
        for spec in runners.read_runners_file(path):
            runners._check_spec(spec)


async def test_concurrent_registrations_of_one_name_one_wins(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/runners", json={"name": "r", "address": f"h:{i + 1}"})
            for i in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    assert len((await client.get("/api/v1/runners")).json()) == 1
