"""A whole platform of real processes for end-to-end tests: runner servers and backends."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.procs import BIN

TOKEN = "e2e-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tar_dir(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Backend:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    env: dict[str, str]
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def call(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        response = self.client.request(method, path, **kw)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        return response.json() if response.content else None

    def register(self, name: str, address: str, **labels: str) -> None:
        self.call(
            "POST", "/runners", 201, json={"name": name, "address": address, "labels": labels}
        )

    def deploy(self, name: str, files: dict[str, str], **fields: Any) -> None:
        self.call("POST", "/deployments", 201, json={"name": name, **fields})
        self.call(
            "POST",
            f"/deployments/{name}/config",
            201,
            content=tar_dir(files),
            headers={"Content-Type": "application/gzip"},
        )

    def start(self, deployment: str, operation: str, **fields: Any) -> dict[str, Any]:
        body = {"deployment": deployment, "operation": operation, **fields}
        return dict(self.call("POST", "/runs", 201, json=body))

    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/runs/{run_id}", 200))

    def wait(self, run_id: int, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run['status']}, not {statuses}: {run}")
            time.sleep(0.05)

    def log_text(self, run_id: int) -> str:
        return self.client.get(f"/runs/{run_id}/logs").text

    def wait_runners_healthy(self, *names: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            runners = {r["name"]: r for r in self.call("GET", "/runners", 200)}
            if all(runners.get(n, {}).get("status") == "healthy" for n in names):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"runners not healthy: {runners}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_backend(
    tmp: Path,
    env: dict[str, str],
    db_url: str,
    *,
    name: str = "backend",
    port: int = 0,
    **extra: str,
) -> Backend:
    port = port or free_port()
    data = tmp / f"{name}-data"
    backend_env = {
        **env,
        "DATABASE_URL": db_url,
        "IAC_DATA_DIR": str(data),
        "IAC_API_TOKEN": TOKEN,
        "IAC_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IAC_BACKEND_ID": name,
        "IAC_RUNNER_POLL_INTERVAL": "0.5",
        **extra,
    }
    log = tmp / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "iac-backend"), "serve", "--port", str(port)],
            env=backend_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Backend(proc, url, log, backend_env)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"backend did not start: {log.read_text()}")


def sse_events(response: httpx.Response) -> Any:
    """Parse a Server-Sent Events stream into (event, id, data) tuples."""
    event, event_id = "message", None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, event_id, json.loads("\n".join(data))
            event, event_id, data = "message", None, []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
