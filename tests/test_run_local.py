"""`make run`'s script, as a new user runs it: a plan and an apply stream, Ctrl-C stops all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import pids_matching
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
