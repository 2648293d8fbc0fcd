"""Real terraform against the backend's ``http`` state backend, over a real uvicorn socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from backend.db import Database
from backend.models import RunStatus
from tests.backend.helpers import new_deployment, start_run, upload

pytestmark = pytest.mark.anyio  # real terraform, as every end-to-end test: on PATH

BACKEND_TF = 'terraform {\n  backend "http" {}\n}\n'


async def terraform(work_dir: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "terraform",
        *args,
        cwd=work_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode()


async def test_terraform_init_apply_and_lock_conflict(
    client: httpx.AsyncClient,
    db: Database,
    live_url: str,
    tf_dir: Path,
    tool_env: dict[str, str],
) -> None:
    await new_deployment(client, "web")
    await upload(client, "web")
    run_id, token = await start_run(db, "web", RunStatus.RUNNING, runner="r1")
    (tf_dir / "backend.tf").write_text(BACKEND_TF)
    address = f"{live_url}/api/v1/state/web"
    init_args = [
        "init",
        "-input=false",
        "-no-color",
        f"-backend-config=address={address}",
        f"-backend-config=lock_address={address}",
        f"-backend-config=unlock_address={address}",
        f"-backend-config=username={run_id}",
        f"-backend-config=password={token}",
    ]
    code, out = await terraform(tf_dir, tool_env, *init_args)
    assert code == 0, out
    code, out = await terraform(
        tf_dir, tool_env, "apply", "-auto-approve", "-input=false", "-no-color"
    )
    assert code == 0, out
    assert "Apply complete! Resources: 1 added" in out

    shown = (await client.get("/api/v1/deployments/web/state")).json()
    assert shown["lock"] is None, "terraform released its lock"
    assert shown["versions"], "apply stored a state version"
    assert all(v["run_id"] == run_id for v in shown["versions"])
    latest = await client.get(
        f"/api/v1/deployments/web/state/versions/{shown['versions'][0]['id']}"
    )
    state = json.loads(latest.content)
    assert state["outputs"]["greeting"]["value"] == "hello"
    assert state["resources"][0]["type"] == "terraform_data"
    # No state file was left on the runner's disk.
    assert not (tf_dir / "terraform.tfstate").exists()

    # Someone else holds the lock: terraform is refused with the holder's details.
    other_id, other_token = await start_run(db, "web", RunStatus.RUNNING)
    holder = {"ID": "held-by-other", "Operation": "OperationTypeApply", "Who": "other@host"}
    async with httpx.AsyncClient() as http:
        taken = await http.request(
            "LOCK", address, content=json.dumps(holder), auth=(str(other_id), other_token)
        )
        assert taken.status_code == 200
        code, out = await terraform(
            tf_dir, tool_env, "plan", "-input=false", "-no-color", "-lock-timeout=0s"
        )
        assert code != 0
        assert "state already locked" in out and "held-by-other" in out, out
        direct = await http.request(
            "LOCK", address, content=json.dumps({"ID": "x"}), auth=(str(run_id), token)
        )
        assert direct.status_code == 423 and direct.json()["ID"] == "held-by-other"
        released = await http.request(
            "UNLOCK", address, content=json.dumps(holder), auth=(str(other_id), other_token)
        )
        assert released.status_code == 200

    code, out = await terraform(
        tf_dir, tool_env, "plan", "-input=false", "-no-color", "-detailed-exitcode"
    )
    assert code == 0, out  # lock free again, and the stored state is current: no changes
