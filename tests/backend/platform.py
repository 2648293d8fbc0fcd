"""A whole platform of real processes for end-to-end tests: runner servers and backends."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.cli import MALLOC_ENV
from tests.backend.archives import tar_gz
from tests.procs import BIN, free_port, stop_process

TOKEN = "e2e-admin-token-0123456789"


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

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        response = self.client.request(method, path, **kw)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        return response.json() if response.content else None

    def register(self, name: str, address: str, *, token: str = "", **labels: str) -> None:
        """Register runner `name` at `address` with `labels` (and the token it expects)."""
        body: dict[str, Any] = {"name": name, "address": address, "labels": labels}
        if token:
            body["token"] = token
        self.call("POST", "/runners", 201, json=body)

    def deploy(
        self, name: str, files: dict[str, str], *, env: dict[str, str] | None = None, **fields: Any
    ) -> None:
        """Create deployment `name` (`fields`: more of its body), upload `files` as its
        configuration, and set `env` as its environment variables."""
        self.call("POST", "/deployments", 201, json={"name": name, **fields})
        self.call(
            "POST",
            f"/deployments/{name}/config",
            201,
            content=tar_gz(files),
            headers={"Content-Type": "application/gzip"},
        )
        for key, value in (env or {}).items():
            body = {"value": value, "category": "env"}
            self.call("PUT", f"/deployments/{name}/variables/{key}", 201, json=body)

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
        stop_process(self.proc, sig)


def start_backend(
    tmp: Path,
    env: dict[str, str],
    db_url: str,
    *,
    name: str = "backend",
    host: str = "127.0.0.1",
    port: int = 0,
    netns: str = "",
    poll_interval: float | None = 0.5,
    **extra: str,
) -> Backend:
    """Start `iac-backend serve` on host:port (0: a free one; inside network namespace
    `netns` when given) and wait until /healthz answers. `poll_interval`: seconds between
    the backend's polls of its runners (None: the product's default). `extra`: more
    environment."""
    port = port or free_port()
    url = f"http://{host}:{port}"
    backend_env = {
        **MALLOC_ENV,
        **env,
        "DATABASE_URL": db_url,
        "IAC_DATA_DIR": str(tmp / f"{name}-data"),
        "IAC_API_TOKEN": TOKEN,
        "IAC_PUBLIC_URL": url,
        "IAC_BACKEND_ID": name,
        "IAC_HOST": host,
        **extra,
    }
    if poll_interval is not None:
        backend_env.setdefault("IAC_RUNNER_POLL_INTERVAL", str(poll_interval))
    log = tmp / f"{name}.log"
    argv = [str(BIN / "iac-backend"), "serve", "--port", str(port)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, env=backend_env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp
        )
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=1) as probe:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"backend {name} exited {proc.returncode}: {log.read_text()}")
            try:
                if probe.get(url + "/healthz").status_code == 200:
                    return Backend(proc, url, log, backend_env)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"backend {name} did not start: {log.read_text()}")


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
