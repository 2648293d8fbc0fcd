"""Start the project's servers as real processes on ephemeral loopback ports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent


def make_fake_tool(directory: Path) -> str:
    """An executable copy of tests/fake_tool.py run by this interpreter."""
    source = (Path(__file__).parent / "fake_tool.py").read_text()
    path = directory / "fake-terraform"
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return str(path)


@dataclass
class RunnerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    workspace_root: Path
    token: str = ""
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stub(self, credentials: grpc.ChannelCredentials | None = None) -> pb_grpc.RunnerStub:
        if credentials is None:
            channel = grpc.insecure_channel(self.address)
        else:
            channel = grpc.secure_channel(
                self.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        self.channels.append(channel)
        return pb_grpc.RunnerStub(channel)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        for channel in self.channels:
            channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_runner(
    tmp: Path,
    env: dict[str, str],
    *args: str,
    token: str = "",
    name: str = "runner",
) -> RunnerProcess:
    """Start `iac-runner-server` on 127.0.0.1:0 and wait until it says which port it got."""
    root = tmp / f"{name}-ws"
    root.mkdir(exist_ok=True)
    log = tmp / f"{name}.log"
    argv = [
        str(BIN / "iac-runner-server"),
        "--listen",
        "127.0.0.1:0",
        "--workspace-root",
        str(root),
        "--runner-id",
        name,
        *args,
    ]
    if token:
        argv += ["--token", token]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"listening"' in line:
                port = json.loads(line)["port"]
                return RunnerProcess(proc, port, log, root, token)
        if proc.poll() is not None:
            raise RuntimeError(f"runner server exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"runner server did not start: {log.read_text()}")


def execute(
    stub: pb_grpc.RunnerStub, metadata: list[tuple[str, str]] | None = None, **fields: Any
) -> list[pb.ExecuteEvent]:
    return list(stub.Execute(pb.ExecuteRequest(**fields), metadata=metadata or []))


def lines_of(events: list[pb.ExecuteEvent]) -> list[pb.Line]:
    return [line for e in events if e.HasField("output") for line in e.output.lines]


def result_of(events: list[pb.ExecuteEvent]) -> pb.Result:
    assert events and events[-1].HasField("result"), events[-3:]
    return events[-1].result
