"""Variables of a deployment: set, list without secrets, delete, and a run's environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backend.app import create_app
from backend.crypto import Cipher
from backend.db import Database
from backend.models import RetiredSecret, Variable
from backend.store import deployments, variables
from tests.backend.conftest import ENCRYPTION_KEY, make_settings
from tests.backend.helpers import new_deployment, snapshot

pytestmark = pytest.mark.anyio
BASE = "/api/v1/deployments/web/variables"


async def test_set_list_update_delete(client: httpx.AsyncClient, db: Database) -> None:
    await new_deployment(client, "web")
    created = await client.put(f"{BASE}/region", json={"value": "eu-west-1"})
    assert created.status_code == 201, created.text
    assert created.json() == {
        "key": "region",
        "category": "terraform",
        "sensitive": False,
        "value": "eu-west-1",
    }
    secret = await client.put(
        f"{BASE}/DB_PASSWORD", json={"value": "hunter2", "sensitive": True, "category": "env"}
    )
    assert secret.status_code == 201
    assert secret.json()["value"] is None
    updated = await client.put(f"{BASE}/region", json={"value": "us-east-1"})
    assert updated.status_code == 200
    listed = (await client.get(BASE)).json()
    assert listed == [
        {"key": "DB_PASSWORD", "category": "env", "sensitive": True, "value": None},
        {"key": "region", "category": "terraform", "sensitive": False, "value": "us-east-1"},
    ]
    assert "hunter2" not in (await client.get(BASE)).text

    async with db.session() as s:
        row = await s.scalar(select(Variable).where(Variable.key == "DB_PASSWORD"))
        assert row is not None and row.value is None and row.value_encrypted is not None
        assert b"hunter2" not in row.value_encrypted
        dep = await deployments.get_deployment(s, "web")
        env = await variables.run_environment(s, Cipher(ENCRYPTION_KEY), dep)
    assert env.env_vars == {"TF_VAR_region": "us-east-1", "DB_PASSWORD": "hunter2"}
    assert env.sensitive_env == ["DB_PASSWORD"]

    # Same key, other category: a separate variable.
    assert (
        await client.put(f"{BASE}/region", json={"value": "x", "category": "env"})
    ).status_code == 201
    assert (await client.delete(f"{BASE}/region")).status_code == 204
    assert (await client.delete(f"{BASE}/region")).status_code == 404
    keys = [(v["key"], v["category"]) for v in (await client.get(BASE)).json()]
    assert keys == [("DB_PASSWORD", "env"), ("region", "env")]
    assert (await client.delete(f"{BASE}/DB_PASSWORD?category=env")).status_code == 204


@pytest.mark.parametrize(
    ("key", "body", "message"),
    [
        ("1abc", {"value": "v"}, "terraform variable name"),
        ("a b", {"value": "v"}, "terraform variable name"),
        ("a-b", {"value": "v", "category": "env"}, "environment variable name"),
        ("TF_HTTP_PASSWORD", {"value": "v", "category": "env"}, "reserved"),
        ("x", {"value": "v", "category": "secret"}, "'terraform' or 'env'"),
        ("x", {"value": 3}, "valid string"),
        ("x", {"sensitive": True}, "Field required"),
        ("x", {"value": "a\x00b"}, "NUL"),
        ("x", {"value": "é" * 65532}, "too large: TF_VAR_x=<value> takes 131074 bytes"),
        ("E", {"value": "v" * 131070, "category": "env"}, "E=<value> takes 131073 bytes"),
        ("x", {"value": "v", "extra": 1}, "Extra inputs"),
    ],
)
async def test_bad_variables_change_nothing(
    client: httpx.AsyncClient, key: str, body: dict[str, object], message: str
) -> None:
    await new_deployment(client, "web")
    await client.put(f"{BASE}/keep", json={"value": "1"})
    before = await snapshot(client, BASE)
    response = await client.put(f"{BASE}/{key}", json=body)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"])
    assert await snapshot(client, BASE) == before


async def test_bad_delete_category_is_422(client: httpx.AsyncClient) -> None:
    await new_deployment(client, "web")
    response = await client.delete(f"{BASE}/x?category=secret")
    assert response.status_code == 422


async def test_sensitive_value_needs_a_key(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, encryption_key=None)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            c.headers["Authorization"] = "Bearer test-admin-token-0123456789"
            await new_deployment(c, "web")
            response = await c.put(f"{BASE}/pw", json={"value": "s", "sensitive": True})
            assert response.status_code == 422
            assert "needs ENCRYPTION_KEY" in response.json()["detail"]
            assert "generate-encryption-key.sh" in response.json()["detail"]
            assert (await c.get(BASE)).json() == []
            assert (await c.put(f"{BASE}/plain", json={"value": "p"})).status_code == 201


async def test_the_largest_value_an_environment_entry_holds_is_taken(
    client: httpx.AsyncClient,
) -> None:
    """E=<131069 bytes> and its NUL: 131072 bytes, what Linux still executes."""
    await new_deployment(client, "web")
    value = "v" * 131069
    response = await client.put(f"{BASE}/E", json={"value": value, "category": "env"})
    assert response.status_code == 201, response.text[:200]
    assert subprocess.run(["true"], env={"E": value}).returncode == 0


async def test_every_value_a_secret_held_is_kept_for_masking(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Changed, made non-sensitive or deleted: a sensitive variable's past values stay
    (encrypted) and every later run masks them; the current values are not listed twice."""
    await new_deployment(client, "web")

    async def put(key: str, value: str, sensitive: bool = True) -> None:
        response = await client.put(f"{BASE}/{key}", json={"value": value, "sensitive": sensitive})
        assert response.status_code in (200, 201), response.text

    async def environment() -> variables.RunEnvironment:
        async with db.session() as s:
            dep = await deployments.get_deployment(s, "web")
            return await variables.run_environment(s, Cipher(ENCRYPTION_KEY), dep)

    await put("pw", "Sup3r-S3cret-XYZ123")
    await put("pw", "Sup3r-S3cret-XYZ123")  # the same value again: nothing retired
    assert (await environment()).mask_values == []
    await put("pw", "N3w-S3cret-ABC789")
    env = await environment()
    assert env.env_vars["TF_VAR_pw"] == "N3w-S3cret-ABC789"
    assert env.mask_values == ["Sup3r-S3cret-XYZ123"]
    await put("token", "tok-one-0001")
    await put("token", "now public", sensitive=False)  # a secret made public: still masked
    assert (await client.delete(f"{BASE}/pw")).status_code == 204
    env = await environment()
    assert "TF_VAR_pw" not in env.env_vars and env.env_vars["TF_VAR_token"] == "now public"
    assert env.mask_values == ["Sup3r-S3cret-XYZ123", "tok-one-0001", "N3w-S3cret-ABC789"]
    # At rest they are encrypted like the current ones.
    async with db.session() as s:
        stored = (await s.scalars(select(RetiredSecret.value_encrypted))).all()
    assert len(stored) == 3
    assert not any(b"S3cret" in v or b"tok-one" in v for v in stored)
