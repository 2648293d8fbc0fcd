"""Real terraform keeping its state in the backend through a real runner server: the path
terraform -> runner's loopback endpoint -> ServeState stream -> backend -> database."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi import FastAPI

from backend.db import Database
from backend.models import RunStatus
from backend.runner_client import RunnerClient
from backend.state_channels import StateChannels
from backend.state_service import StateService
from backend.store import runs
from backend.store.runners import RunnerConnection
from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.helpers import new_deployment, start_run, upload
from tests.conftest import OFFLINE_CONFIG
from tests.procs import start_runner

pytestmark = pytest.mark.anyio

BACKEND_TF = 'terraform {\n  backend "http" {}\n}\n'


async def test_terraform_keeps_state_through_its_runner_and_meets_the_lock(
    client: httpx.AsyncClient,
    app: FastAPI,
    db: Database,
    tool_env: dict[str, str],
    tmp_path: Path,
) -> None:
    runner = start_runner(tmp_path, tool_env)
    engine = app.state.engine
    # A backend's state service and its stream to the runner, as the engine makes them,
    # under a backend id of the test's own (the app's engine adopts runs claimed under its
    # id, and leaves these alone).
    service = StateService(db, engine.cipher, "test-backend", 64 * 1024 * 1024, engine.run_of)
    channels = StateChannels("test-backend", lambda name: partial(service.handle, name))
    client_r1 = RunnerClient.connect(RunnerConnection("r1", runner.address, None, None, None, None))
    channels.sync({"r1": client_r1})
    try:
        await new_deployment(client, "web")
        await upload(client, "web")
        run_id, _ = await start_run(
            db, "web", RunStatus.RUNNING, "r1", backend_id=service.backend_id
        )
        work_dir = runner.workspace_root / "web"
        work_dir.mkdir()
        (work_dir / "main.tf").write_text(OFFLINE_CONFIG)
        (work_dir / "backend.tf").write_text(BACKEND_TF)

        async with grpc.aio.insecure_channel(runner.address) as channel:
            stub = pb_grpc.RunnerStub(channel)

            async def step(command: str, *args: str) -> tuple[pb.Result, str]:
                step_id = f"btest-r{run_id}-apply-1-{command}-{len(args)}"
                async with db.session() as s:
                    (await runs.get_run(s, run_id)).runner_run_id = step_id
                request = pb.ExecuteRequest(
                    run_id=step_id,
                    tool="terraform",
                    work_dir="web",
                    command=command,
                    args=["-no-color", *args],
                    state_channel=service.backend_id,
                )
                events = [e async for e in stub.Execute(request)]
                text = "\n".join(line.text for e in events for line in e.output.lines)
                return events[-1].result, text

            result, out = await step("init")
            assert result.success, out
            result, out = await step("apply", "-auto-approve")
            assert result.success, out
            assert "Apply complete! Resources: 1 added" in out

            shown = (await client.get("/api/v1/deployments/web/state")).json()
            assert shown["lock"] is None, "terraform released its lock"
            assert shown["versions"] and all(v["run_id"] == run_id for v in shown["versions"])
            latest = await client.get(
                f"/api/v1/deployments/web/state/versions/{shown['versions'][0]['id']}"
            )
            state = json.loads(latest.content)
            assert state["outputs"]["greeting"]["value"] == "hello"
            assert not (work_dir / "terraform.tfstate").exists(), "no state on the runner's disk"

            # Another run holds the lock: terraform is refused with the holder's details.
            other_id, other_step = await start_run(
                db, "web", RunStatus.RUNNING, "r1", backend_id=service.backend_id
            )
            holder = {"ID": "held-by-other", "Operation": "OperationTypeApply", "Who": "o@h"}
            lock = pb.StateCall(run_id=other_step, method="LOCK", body=json.dumps(holder).encode())
            assert (await service.handle("r1", lock)).status == 200
            result, out = await step("plan", "-lock-timeout=0s")
            assert not result.success
            assert "state already locked" in out.lower() and "held-by-other" in out, out
            unlock = pb.StateCall(
                run_id=other_step, method="UNLOCK", body=json.dumps(holder).encode()
            )
            assert (await service.handle("r1", unlock)).status == 200
            result, out = await step("plan", "-detailed-exitcode", "-lock-timeout=0s")
            assert result.exit_code == 0, out  # the stored state is current: no changes
    finally:
        await channels.close()
        await client_r1.close()
        runner.stop()
