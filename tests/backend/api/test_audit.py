"""The audit log on SQLite and PostgreSQL: what is recorded (every request that may change
something, every refusal of a token or a role), in the request's own transaction; the hash
chain, which reports the exact entry edited or removed by hand (API and `iac-backend audit
verify`, run as the README says); retention that removes a prefix and says so."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from backend.config import Settings
from backend.db import Database
from backend.models import AuditEntry, utcnow
from backend.store import audit
from tests.backend.helpers import new_deployment, upload
from tests.procs import BIN

pytestmark = pytest.mark.anyio


async def entries(client: httpx.AsyncClient, **params: str | int) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_what_is_recorded_and_what_is_not(
    app: FastAPI, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await new_deployment(client, "web")
    assert (await upload(client, "web")).status_code == 201
    duplicate = await client.post("/api/v1/deployments", json={"name": "web"})
    assert duplicate.status_code == 409
    await client.get("/api/v1/deployments")  # a read: not recorded
    await anon.get("/api/v1/runs", headers={"Authorization": "Bearer not-a-token-at-all"})
    body = {"name": "eve", "role": "viewer"}
    viewer = (await client.post("/api/v1/tokens", json=body)).json()["token"]
    variable = await client.put(
        "/api/v1/deployments/web/variables/db_password",
        json={"value": "Sup3r-S3cret-XYZ123", "sensitive": True},
    )
    assert variable.status_code == 201
    refused = await anon.delete(
        "/api/v1/deployments/web", headers={"Authorization": f"Bearer {viewer}"}
    )
    assert refused.status_code == 403

    log = await entries(client)
    seen = [(e["actor"], e["action"], e["target"], str(e["result"])[:3]) for e in log]
    admin = log[0]["actor"]
    assert seen == [
        (admin, "POST /deployments", "name=web", "201"),
        (admin, "POST /deployments/{name}/config", "name=web", "201"),
        (admin, "POST /deployments", "name=web", "409"),
        ("anonymous", "GET /runs", "", "401"),
        (admin, "POST /tokens", "name=eve role=viewer", "201"),
        (admin, "PUT /deployments/{name}/variables/{key}", "name=web key=db_password", "201"),
        ("eve", "DELETE /deployments/{name}", "name=web", "403"),
    ], seen
    assert "already exists" in str(log[2]["result"])
    assert "needs the admin role" in str(log[6]["result"])
    assert all(e["source"] == "127.0.0.1" or e["source"] for e in log)
    assert "Sup3r-S3cret-XYZ123" not in str(log), "a variable's value is never recorded"
    # Nor one sent in a refused request (a 422 names the field, never its value).
    typo = await client.put(
        "/api/v1/deployments/web/variables/pw", json={"vaule": "T0PSECRET-typo", "sensitive": True}
    )
    assert typo.status_code == 422
    last = (await entries(client))[-1]
    assert last["result"].startswith("422: ") and "vaule" in last["result"]
    assert "T0PSECRET" not in json.dumps(await entries(client))
    # Filters, and paging by id.
    assert [e["action"] for e in await entries(client, actor="eve")] == [
        "DELETE /deployments/{name}"
    ]
    assert len(await entries(client, target="name=web")) == 6
    assert len(await entries(client, after_id=log[4]["id"])) == 3
    # Nothing in the API changes or removes an entry.
    spec = (await client.get("/openapi.json")).json()
    audit_ops = {
        m for p, ops in spec["paths"].items() if p.startswith("/api/v1/audit") for m in ops
    }
    assert audit_ops == {"get"}
    # Only an unscoped admin reads it.
    as_viewer = await anon.get("/api/v1/audit", headers={"Authorization": f"Bearer {viewer}"})
    assert as_viewer.status_code == 403


async def _verify_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`iac-backend audit verify` as the README says, against this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAC_")}
    env["DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [str(BIN / "iac-backend"), "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_entry_edited_or_removed_by_hand_is_found(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    for i in range(6):
        await new_deployment(client, f"d{i}")
    log = await entries(client)
    assert len(log) == 6
    verdict = (await client.get("/api/v1/audit/verify")).json()
    assert verdict == {
        "entries": 6, "ok": True, "broken_at": None, "reason": "", "head_id": log[-1]["id"],
        "head": log[-1]["hash"],
    }  # fmt: skip
    ok = await _verify_cli(settings)
    assert ok.returncode == 0 and "6 entries, the chain holds" in ok.stdout, ok
    assert f"head: entry {log[-1]['id']} {log[-1]['hash']}" in ok.stdout

    # Someone with the database's password rewrites who did it.
    async with db.session() as s:
        await s.execute(
            update(AuditEntry).where(AuditEntry.id == log[2]["id"]).values(actor="someone-else")
        )
    verdict = (await client.get("/api/v1/audit/verify")).json()
    assert verdict["broken_at"] == log[2]["id"] and "edited" in verdict["reason"]
    broken = await _verify_cli(settings)
    assert broken.returncode == 1, broken
    assert f"audit log broken at entry {log[2]['id']}: its content does not match" in broken.stderr
    assert "Traceback" not in broken.stderr

    async with db.session() as s:  # put it back, then remove one instead
        await s.execute(
            update(AuditEntry).where(AuditEntry.id == log[2]["id"]).values(actor=log[2]["actor"])
        )
        await s.execute(text(f"DELETE FROM audit_log WHERE id = {log[3]['id']}"))
    verdict = (await client.get("/api/v1/audit/verify")).json()
    assert verdict["broken_at"] == log[4]["id"], verdict
    assert f"its link to entry {log[2]['id']} is broken" in verdict["reason"]


async def test_retention_removes_a_prefix_and_says_so(
    client: httpx.AsyncClient, db: Database
) -> None:
    for i in range(5):
        await new_deployment(client, f"d{i}")
    log = await entries(client)
    async with db.session() as s:  # the first three are a year old
        await s.execute(
            update(AuditEntry)
            .where(AuditEntry.id <= log[2]["id"])
            .values(at=utcnow() - timedelta(days=365))
        )
    await _relink(db)
    assert (await client.get("/api/v1/audit/verify")).json()["ok"] is True
    async with db.session() as s:
        removed = await audit.apply_retention(s, 30)
    assert removed == 3
    after = await entries(client)
    assert [e["id"] for e in after[:2]] == [log[3]["id"], log[4]["id"]]
    assert after[-1]["action"] == audit.RETENTION and after[-1]["actor"] == "system"
    assert "removed 3 entries older than 30 days" in str(after[-1]["result"])
    assert (await client.get("/api/v1/audit/verify")).json()["ok"] is True
    # A prefix removed by hand, with no retention entry for it, is reported.
    async with db.session() as s:
        await s.execute(text(f"DELETE FROM audit_log WHERE id = {after[-1]['id']}"))
        await s.execute(text(f"DELETE FROM audit_log WHERE id = {log[3]['id']}"))
    verdict = (await client.get("/api/v1/audit/verify")).json()
    assert verdict["ok"] is False and verdict["broken_at"] == log[4]["id"], verdict


async def _relink(db: Database) -> None:
    """Recompute every entry's link and hash in order (what only a test may do)."""
    async with db.session() as s:
        rows = (await s.scalars(select(AuditEntry.id).order_by(AuditEntry.id))).all()
        prev = audit.GENESIS
        for row_id in rows:
            row = await s.get_one(AuditEntry, row_id)
            row.prev_hash = prev
            row.hash = audit.digest(
                prev, row.at, row.token_id, row.actor, row.source, row.action, row.target,
                row.result,
            )  # fmt: skip
            prev = row.hash
