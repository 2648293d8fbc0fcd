"""`make run`: the whole platform on one machine, on the embedded default (SQLite).

Starts a backend and one runner server (label provider=local) on loopback, registers the
runner, creates the example deployment from examples/hello, runs a plan and an apply
while streaming their logs, then keeps both services up until Ctrl-C, which cancels the
runs executing on the runner (running or applying: so no state lock is left), then stops
the backend and the runner. Queued runs and plans awaiting approval are kept: the next
`make run` takes them up again.

Settings (environment variables, defaults printed on start):
  IAC_RUN_PORT          backend port                  8000
  IAC_RUN_RUNNER_PORT   runner server port            50051
  IAC_DATA_DIR          data dir (DB, keys, logs)     ./.data
  IAC_API_TOKEN         API token                     generated once, kept in the data dir
  ENCRYPTION_KEY        Fernet key for secrets        generated once, kept in the data dir
  IAC_RUN_EXAMPLE       example config directory      examples/hello
  IAC_RUN_DEMO          0 to skip the plan and apply  1
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from backend.cli import MALLOC_ENV

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TERMINAL = {"succeeded", "failed", "canceled", "timed_out"}
# Runs a runner is executing: Ctrl-C cancels these (terraform stops, the lock is released).
# Queued runs and plans awaiting approval hold nothing on the runner and are kept.
EXECUTING = ("running", "applying")


def say(text: str) -> None:
    """Print, but never let a closed terminal or pipe stop the shutdown."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def setting(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    print(f"  {name:<20} {value}")
    return value


def kept_secret(path: Path, make: Any) -> str:
    """A secret generated once and kept (0600, from its creation) in the data dir, so
    restarts reuse it."""
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    value = str(make())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def tar_gz(directory: Path) -> bytes:
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            rel = path.relative_to(directory)
            if path.is_file() and ".terraform" not in rel.parts and "tfstate" not in path.name:
                tar.add(path, arcname=str(rel))
    return buf.getvalue()


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not become ready in 60 s; see {log}")


def reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    def __init__(self) -> None:
        print("iac-runner local platform, settings:")
        self.port = int(setting("IAC_RUN_PORT", "8000"))
        self.runner_port = int(setting("IAC_RUN_RUNNER_PORT", "50051"))
        self.data = Path(setting("IAC_DATA_DIR", str(ROOT / ".data"))).resolve()
        # The database, the logs, the generated API token and key: this user's alone.
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data.chmod(0o700)
        (self.data / "logs").mkdir(exist_ok=True, mode=0o700)
        token = os.environ.get("IAC_API_TOKEN") or kept_secret(
            self.data / "api-token", lambda: secrets.token_urlsafe(24)
        )
        print(f"  {'IAC_API_TOKEN':<20} (in {self.data / 'api-token'} unless set)")
        key = os.environ.get("ENCRYPTION_KEY") or kept_secret(
            self.data / "encryption.key", lambda: Fernet.generate_key().decode()
        )
        print(f"  {'ENCRYPTION_KEY':<20} (in {self.data / 'encryption.key'} unless set)")
        self.example = Path(setting("IAC_RUN_EXAMPLE", str(ROOT / "examples" / "hello")))
        self.demo = setting("IAC_RUN_DEMO", "1") != "0"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "IAC_API_TOKEN": token, "ENCRYPTION_KEY": key}
        self.api = httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.data / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            # A session of its own: Ctrl-C reaches only this script, which stops them in order.
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((name, proc))
        return proc, log

    def start(self) -> None:
        runner, runner_log = self.spawn(
            "runner",
            [
                str(BIN / "iac-runner-server"),
                "--listen",
                f"127.0.0.1:{self.runner_port}",
                "--label",
                "provider=local",
                "--runner-id",
                "local-1",
                "--workspace-root",
                str(self.data / "workspaces"),
            ],
            self.env,
        )
        backend_env = {
            **MALLOC_ENV,
            **self.env,
            "IAC_DATA_DIR": str(self.data),
            "IAC_PUBLIC_URL": self.url,
            "IAC_BACKEND_ID": "local",
        }
        backend, backend_log = self.spawn(
            "backend", [str(BIN / "iac-backend"), "serve", "--port", str(self.port)], backend_env
        )
        (self.data / "workspaces").mkdir(exist_ok=True)
        health = [
            str(BIN / "iac-runner-server"),
            "health",
            "--address",
            f"127.0.0.1:{self.runner_port}",
        ]
        wait_until(
            "the runner server",
            lambda: subprocess.run(health, capture_output=True, check=False).returncode == 0,
            runner,
            runner_log,
        )
        wait_until("the backend", lambda: reachable(self.url + "/healthz"), backend, backend_log)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.api.request(method, path, **kw)
        if response.status_code >= 400:
            sys.exit(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def register(self) -> None:
        address = f"127.0.0.1:{self.runner_port}"
        existing = self.api.get("/runners/local-1")
        if existing.status_code == 200 and existing.json()["address"] != address:
            self.call("DELETE", "/runners/local-1")
        if existing.status_code != 200 or existing.json()["address"] != address:
            self.call(
                "POST",
                "/runners",
                json={"name": "local-1", "address": address, "labels": {"provider": "local"}},
            )
        deadline = time.monotonic() + 30
        while self.call("GET", "/runners/local-1")["status"] != "healthy":
            if time.monotonic() > deadline:
                sys.exit("the backend does not see the runner as healthy; see .data/logs/")
            time.sleep(0.2)

    def deployment(self) -> None:
        if self.api.get("/deployments/hello").status_code == 404:
            self.call(
                "POST",
                "/deployments",
                json={
                    "name": "hello",
                    "tool": "terraform",
                    "required_labels": {"provider": "local"},
                },
            )
        version = self.call(
            "POST",
            "/deployments/hello/config",
            content=tar_gz(self.example),
            headers={"Content-Type": "application/gzip"},
        )
        print(f"deployment 'hello': config v{version['version']} from {self.example}")

    def run_and_stream(self, operation: str) -> str:
        run = self.call(
            "POST",
            "/runs",
            json={"deployment": "hello", "operation": operation, "auto_approve": True},
        )
        print(f"\n=== run {run['id']}: {operation} of 'hello' (logs stream live) ===", flush=True)
        last = "0"
        status = run["status"]
        while status not in TERMINAL:
            try:
                with self.api.stream(
                    "GET",
                    f"/runs/{run['id']}/logs",
                    params={"follow": "true"},
                    headers={"Last-Event-ID": last},
                    timeout=None,
                ) as response:
                    event = "message"
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                            if event == "message":
                                print(data["text"], flush=True)
                            elif event == "status":
                                status = data["status"]
                        elif line == "":
                            if event == "end":
                                break
                            event = "message"
            except httpx.HTTPError:
                pass  # the stream dropped: resume after the last line we printed
            status = self.call("GET", f"/runs/{run['id']}")["status"]
        print(f"=== run {run['id']}: {status} ===", flush=True)
        return str(status)

    def summary(self) -> None:
        print(
            f"""
The platform is running:
  web UI         {self.url}/   (log in with the API token)
  API            {self.url}/api/v1   (token: cat {self.data / "api-token"})
  API docs       {self.url}/docs
  runner         127.0.0.1:{self.runner_port} (local-1, provider=local)
  logs           {self.data / "logs"}/
  try            grpcurl -plaintext 127.0.0.1:{self.runner_port} iacrunner.v1.Runner/GetInfo
Press Ctrl-C to stop (runs executing are canceled first, so no state lock is left;
queued runs and plans awaiting approval are kept).""",
            flush=True,
        )

    def executing(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        for status in EXECUTING:
            runs += self.api.get("/runs", params={"status": status, "limit": 1000}).json()
        return runs

    def stop(self) -> None:
        say("\nstopping: canceling the runs executing on the runner...")
        try:
            for run in self.executing():
                self.api.post(f"/runs/{run['id']}/cancel")
                say(f"  run {run['id']} ({run['status']}) canceled")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.executing():
                time.sleep(0.2)
            kept = [
                r
                for r in self.api.get("/runs", params={"limit": 1000}).json()
                if r["status"] in ("queued", "awaiting_approval")
            ]
            if kept:
                listed = ", ".join(f"{r['id']} ({r['status']})" for r in kept)
                say(f"  kept for the next `make run`: {listed}")
        except (httpx.HTTPError, ValueError):
            pass
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            say(f"  {name} stopped")


def main() -> int:
    stack = Stack()
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        stack.register()
        stack.deployment()
        if stack.demo:
            stack.run_and_stream("plan")
            stack.run_and_stream("apply")
        stack.summary()
        while not stop:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
