"""`make run`'s script, as a new user runs it: a plan and an apply stream, Ctrl-C stops all
but the runs waiting (queued, awaiting approval), which the next `make run` takes up."""

from __future__ import annotations

import io
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx

from tests.conftest import pids_matching, wait_for
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_run_local_streams_plan_and_apply_then_stops_cleanly(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    port, runner_port = free_port(), free_port()
    env = {
        **tool_env,
        "IAC_DATA_DIR": str(data),
        "IAC_RUN_PORT": str(port),
        "IAC_RUN_RUNNER_PORT": str(runner_port),
    }
    out = tmp_path / "out.txt"

    def start() -> subprocess.Popen[bytes]:
        with open(out, "wb") as f:
            return subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "run_local.py")],
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    for attempt in (1, 2):  # a second run keeps the first one's data
        proc = start()
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        text = out.read_text()
        assert f"config v{attempt} from" in text
        assert "1 to add, 0 to change, 0 to destroy." in text or attempt == 2
        assert f"=== run {2 * attempt - 1}: succeeded ===" in text
        assert f"=== run {2 * attempt}: succeeded ===" in text
        assert f"http://127.0.0.1:{port}/docs" in text
        if attempt == 1:
            assert "Apply complete! Resources: 1 added" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.read_text()
        assert "backend stopped" in out.read_text() and "runner stopped" in out.read_text()
        assert not pids_matching(f"127.0.0.1:{runner_port}")
        assert not pids_matching(f"--port {port}")
    assert (data / "iac.db").exists() and (data / "api-token").exists()
    # The data dir and the secrets in it are this user's alone.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("api-token", "encryption.key", "iac.db"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_ctrl_c_keeps_queued_runs_and_plans_awaiting_approval(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C cancels only what a runner executes: a plan awaiting approval and a queued
    run are there, as they were, after the next `make run`, and the plan still applies.
    The backend's public URL follows IAC_RUN_PORT."""
    data = tmp_path / "data"
    port, runner_port = free_port(), free_port()
    env = {
        **tool_env,
        "IAC_DATA_DIR": str(data),
        "IAC_RUN_PORT": str(port),
        "IAC_RUN_RUNNER_PORT": str(runner_port),
        "IAC_RUN_DEMO": "0",
    }
    out = tmp_path / "out.txt"
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[bytes]:
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "run_local.py")],
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: proc.poll() is None and "Press Ctrl-C" in out.read_text(), 120)
        return proc

    def ctrl_c(proc: subprocess.Popen[bytes]) -> str:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.read_text()
        return out.read_text()

    proc = start()
    try:
        backend_log = (data / "logs" / "backend.log").read_text()
        assert f"public_url = {url}\n" in backend_log
        token = (data / "api-token").read_text().strip()
        api = httpx.Client(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        plan = api.post("/runs", json={"deployment": "hello", "operation": "apply"}).json()
        wait_for(
            lambda: api.get(f"/runs/{plan['id']}").json()["status"] == "awaiting_approval", 120
        )
        # A run no runner can take stays queued.
        api.post("/deployments", json={"name": "far", "required_labels": {"provider": "none"}})
        config = tarfile_of(ROOT / "examples" / "hello")
        api.post(
            "/deployments/far/config",
            content=config,
            headers={"Content-Type": "application/gzip"},
        )
        queued = api.post("/runs", json={"deployment": "far", "operation": "plan"}).json()
        text = ctrl_c(proc)
        assert "canceled" not in text.split("stopping:")[1].split("\n", 1)[1], text
        assert f"kept for the next `make run`: {queued['id']} (queued), {plan['id']}" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = start()
    try:
        assert api.get(f"/runs/{plan['id']}").json()["status"] == "awaiting_approval"
        assert api.get(f"/runs/{queued['id']}").json()["status"] == "queued"
        assert api.post(f"/runs/{plan['id']}/approve").status_code == 200
        wait_for(lambda: api.get(f"/runs/{plan['id']}").json()["status"] == "succeeded", 120)
        ctrl_c(proc)
    finally:
        api.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tarfile_of(directory: Path) -> bytes:
    """The *.tf files of `directory` as a tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.glob("*.tf")):
            tar.add(path, arcname=path.name)
    return buf.getvalue()
