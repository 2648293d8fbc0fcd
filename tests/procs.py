"""Start the project's servers as real processes on ephemeral loopback ports."""

from __future__ import annotations

import json
import signal
import socket
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
# Room for the largest message a runner sends (a Result with artifacts).
GRPC_OPTIONS = [("grpc.max_receive_message_length", 128 * 1024 * 1024)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> int:
    """Send `sig`, wait up to `timeout` s for the exit, then SIGKILL; the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def make_fake_tool(directory: Path) -> str:
    """An executable copy of tests/fake_tool.py run by this interpreter."""
    source = (Path(__file__).parent / "fake_tool.py").read_text()
    path = directory / "fake-terraform"
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return str(path)


@dataclass
class RunnerProcess:
    """A real `iac-runner-server` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    workspace_root: Path
    token: str = ""
    name: str = "runner"
    host: str = "127.0.0.1"
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def channel(self) -> grpc.Channel:
        """A plaintext channel the caller closes."""
        return grpc.insecure_channel(self.address, options=GRPC_OPTIONS)

    def aio_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address, options=GRPC_OPTIONS)

    def stub(self, credentials: grpc.ChannelCredentials | None = None) -> pb_grpc.RunnerStub:
        """A stub on a channel closed by stop()."""
        if credentials is None:
            channel = self.channel()
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
        return stop_process(self.proc, sig, timeout)


def start_runner(
    tmp: Path,
    env: dict[str, str],
    *args: str,
    token: str = "",
    name: str = "runner",
    host: str = "127.0.0.1",
    port: int = 0,
    netns: str = "",
    workspace_root: Path | None = None,
    timeout: float = 60,
) -> RunnerProcess:
    """Start `iac-runner-server` on host:port (0: any; inside network namespace `netns` when
    given) and wait until it says which port it got."""
    root = workspace_root or tmp / f"{name}-ws"
    root.mkdir(parents=True, exist_ok=True)
    log = tmp / f"{name}.log"
    argv = [
        str(BIN / "iac-runner-server"),
        "--listen",
        f"{host}:{port}",
        "--workspace-root",
        str(root),
        "--runner-id",
        name,
        *args,
    ]
    if token:
        argv += ["--token", token]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"listening"' in line:
                got = int(json.loads(line)["port"])
                return RunnerProcess(proc, got, log, root, token, name, host)
        if proc.poll() is not None:
            raise RuntimeError(f"runner server {name} exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"runner server {name} did not start: {log.read_text()}")


def execute(
    stub: pb_grpc.RunnerStub, metadata: list[tuple[str, str]] | None = None, **fields: Any
) -> list[pb.ExecuteEvent]:
    return list(stub.Execute(pb.ExecuteRequest(**fields), metadata=metadata or []))


def lines_of(events: list[pb.ExecuteEvent]) -> list[pb.Line]:
    return [line for e in events if e.HasField("output") for line in e.output.lines]


def result_of(events: list[pb.ExecuteEvent]) -> pb.Result:
    assert events and events[-1].HasField("result"), events[-3:]
    return events[-1].result
