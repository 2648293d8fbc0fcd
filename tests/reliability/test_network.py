"""Runners on separate network hosts, and one host's link cut mid-run.

Each runner server runs in a network namespace of its own, plugged by a veth cable into
a bridge in the root namespace, where the backend listens on the bridge's address. The
addresses (10.200.X.0/24) exist only on these interfaces; no traffic leaves the machine.
Cutting a host's link is `ip link set <its cable> down` on the bridge side.

What happens, as designed (README, Reliability):
- a short flap (shorter than gRPC keepalive notices, ~10-20 s): TCP retransmits, the stream
  goes on, the run succeeds with every line once;
- a cut that lasts: keepalive breaks the stream after 10-20 s, the backend retries Attach for
  IAC_RUNNER_LOST_TIMEOUT, then fails the run ("lost contact with runner ..."), releases
  its state lock and marks the runner unhealthy; new runs go to the other runners. The
  terraform on the cut-off host goes on (on_disconnect=CONTINUE) but can no longer change
  the state: the backend refuses the state calls of a run that ended (what that terraform
  could not save reaches the backend as a recovered state version, never lost);
- a link that returns within IAC_RUNNER_LOST_TIMEOUT after the stream broke: the backend
  re-attaches from the last stored line and the run succeeds with every line once (soak).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from tests.backend.platform import Backend, start_backend
from tests.conftest import skip_unless_strict, wait_for
from tests.procs import RunnerProcess
from tests.reliability.harness import (
    Counter,
    Follower,
    Host,
    Network,
    established_to,
    lines_config,
    require_netns,
    run_lines_once,
    start_server,
)

TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
RUNNER_TOKEN = "netns-runner-token-0123456789"
LOST_TIMEOUT = 4.0
PORT = 50051


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    require_netns()
    try:
        net = Network()
    except subprocess.CalledProcessError as exc:
        skip_unless_strict(
            f"network namespaces: a bridge cannot be made here: {exc.stderr.strip()}"
        )
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="module")
def hosts(
    network: Network, rel_env: dict[str, str], module_tmp: Path
) -> Iterator[tuple[Backend, dict[str, tuple[Host, RunnerProcess]]]]:
    """Runners net-a and net-b on two hosts, and a backend on the bridge that knows both."""
    started: dict[str, tuple[Host, RunnerProcess]] = {}
    backend: Backend | None = None
    try:
        for name in ("net-a", "net-b"):
            host = network.add_host()
            server = start_server(
                module_tmp,
                rel_env,
                name,
                "--label",
                "provider=aws",
                "--label",
                f"host={name}",
                host=host.address,
                port=PORT,
                token=RUNNER_TOKEN,
                netns=host.netns,
            )
            started[name] = (host, server)
        backend = start_backend(
            module_tmp,
            rel_env,
            f"sqlite:///{module_tmp / 'iac.db'}",
            host=network.gateway,
            IAC_RUNNER_LOST_TIMEOUT=str(LOST_TIMEOUT),
        )
        for name, (_, server) in started.items():
            backend.register(name, server.address, token=RUNNER_TOKEN, provider="aws")
        backend.wait_runners_healthy(*started)
        yield backend, started
    finally:
        if backend is not None:
            backend.stop()
        for host, server in started.values():
            network.mend(host)
            server.stop()


def _progress(server: RunnerProcess, run: dict[str, Any]) -> int:
    """How far the run's local-exec loop got on the runner host (it writes its count to a
    file in its work_dir, which the test sees: the namespaces share the file system). The
    backend names work dirs <database prefix>-run-<run id>-<phase>-<dispatch>."""
    files = server.workspace_root.glob(f"*-run-{run['id']}-apply-*/progress")
    return max((int(p.read_text() or 0) for p in files), default=0)


def _deploy_on(backend: Backend, name: str, runner: str, n: int, pause: str) -> dict[str, Any]:
    config = lines_config(name, n, pause, extra="; echo $i > progress")
    backend.deploy(name, {"main.tf": config}, required_labels={"host": runner})
    return backend.start(name, "apply", auto_approve=True)


def test_a_short_flap_of_the_link_loses_and_doubles_nothing(
    hosts: tuple[Backend, dict[str, tuple[Host, RunnerProcess]]], network: Network
) -> None:
    backend, started = hosts
    host, server = started["net-a"]
    n = 60
    run = _deploy_on(backend, "flap", "net-a", n, "0.1")
    follower = Follower(backend, run["id"]).start()
    wait_for(lambda: _progress(server, run) >= 10, timeout=120)
    network.cut(host)
    cut_at = _progress(server, run)
    # The runner goes on while it is cut off: hold the cut until it printed 20 more lines.
    wait_for(lambda: _progress(server, run) >= cut_at + 20, timeout=30)
    network.mend(host)
    run = backend.wait(run["id"], *TERMINAL, timeout=120)
    assert run["status"] == "succeeded", run
    stored = run_lines_once(backend, run, "flap", n)
    follower.join()
    follower.check(stored)


def test_a_lasting_cut_fails_the_run_after_the_lost_timeout_and_new_runs_go_elsewhere(
    hosts: tuple[Backend, dict[str, tuple[Host, RunnerProcess]]], network: Network
) -> None:
    backend, started = hosts
    host, server = started["net-a"]
    run = _deploy_on(backend, "cut", "net-a", 600, "0.2")
    wait_for(lambda: _progress(server, run) >= 3, timeout=120)
    lock = backend.call("GET", "/deployments/cut/state", 200)["lock"]
    assert lock is not None and lock["run_id"] == run["id"]
    network.cut(host)
    cut = time.monotonic()
    run = backend.wait(run["id"], *TERMINAL, timeout=90)
    took = time.monotonic() - cut

    assert run["status"] == "failed", run
    assert "lost contact with runner net-a" in run["error_msg"], run["error_msg"]
    # keepalive (10 s ping + 10 s timeout) + the lost timeout + polling slack
    assert 0 < took < 20 + LOST_TIMEOUT + 15, took
    assert backend.call("GET", "/deployments/cut/state", 200)["lock"] is None
    assert "state_lock_released" in [e["kind"] for e in run["events"]]
    wait_for(
        lambda: backend.call("GET", "/runners/net-a", 200)["status"] == "unhealthy", timeout=30
    )

    # New runs go to the runner that is still reachable.
    backend.deploy("after", {"main.tf": lines_config("after", 3)}, required_labels={})
    after = backend.wait(backend.start("after", "apply", auto_approve=True)["id"], *TERMINAL)
    assert after["status"] == "succeeded" and after["runner_id"] == "net-b", after
    # A run that can only go to the cut-off host waits, and says why.
    backend.deploy(
        "pinned", {"main.tf": lines_config("pinned", 1)}, required_labels={"host": "net-a"}
    )
    pinned = backend.start("pinned", "plan")
    wait_for(lambda: "net-a: unhealthy" in backend.run(pinned["id"])["wait_reason"], timeout=30)

    # The link returns: the orphaned terraform on net-a is still running, but it can no
    # longer write the state or take the lock (the run ended): stop it and look at what it
    # says.
    network.mend(host)
    channel = grpc.insecure_channel(server.address)
    try:
        stub = pb_grpc.RunnerStub(channel)
        md = [("authorization", f"Bearer {RUNNER_TOKEN}")]
        info = stub.GetInfo(pb.GetInfoRequest(), metadata=md, timeout=30, wait_for_ready=True)
        orphan = [r for r in info.active_runs if f"-r{run['id']}-apply-" in r]
        assert orphan, info
        stub.Cancel(pb.CancelRequest(run_id=orphan[0]), metadata=md, timeout=10)
        events = list(
            stub.Attach(pb.AttachRequest(run_id=orphan[0], from_seq=1), metadata=md, timeout=60)
        )
    finally:
        channel.close()
    result = events[-1].result
    assert result.outcome == pb.OUTCOME_CANCELED and not result.success, result
    log = "\n".join(line.text for e in events if e.HasField("output") for line in e.output.lines)
    assert "403" in log or "Forbidden" in log or "state is closed" in log, log[-3000:]
    state = backend.call("GET", "/deployments/cut/state", 200)
    assert state["lock"] is None
    # What it could not save was handed to the backend and kept, marked recovered.
    late = [v for v in state["versions"] if v.get("run_id") == run["id"]]
    assert all(v["recovered"] for v in late), state["versions"]
    backend.wait_runners_healthy("net-a", timeout=60)
    assert backend.wait(pinned["id"], *TERMINAL)["status"] == "succeeded"


@pytest.mark.slow
def test_a_link_back_within_the_lost_timeout_reattaches_with_every_line_once(
    network: Network, rel_env: dict[str, str], tmp_path: Path
) -> None:
    """The stream breaks (keepalive), the link returns before IAC_RUNNER_LOST_TIMEOUT
    runs out: the backend re-attaches from its last stored line."""
    host = network.add_host()
    server = start_server(
        tmp_path, rel_env, "net-r", "--label", "host=net-r", host=host.address, port=PORT,
        token=RUNNER_TOKEN, netns=host.netns,
    )  # fmt: skip
    backend = start_backend(
        tmp_path,
        rel_env,
        f"sqlite:///{tmp_path / 'iac.db'}",
        host=network.gateway,
        IAC_RUNNER_LOST_TIMEOUT="60",
    )
    try:
        backend.register("net-r", server.address, token=RUNNER_TOKEN)
        backend.wait_runners_healthy("net-r")
        n = 300
        run = _deploy_on(backend, "back", "net-r", n, "0.1")
        follower = Follower(backend, run["id"]).start()
        wait_for(lambda: _progress(server, run) >= 10, timeout=120)
        assert established_to(host.address, PORT)
        network.cut(host)
        # Until gRPC gave the connection up (keepalive): the stream is broken for sure.
        wait_for(lambda: not established_to(host.address, PORT), timeout=60)
        assert backend.run(run["id"])["status"] == "applying"
        network.mend(host)
        run = backend.wait(run["id"], *TERMINAL, timeout=120)
        assert run["status"] == "succeeded", run
        stored = run_lines_once(backend, run, "back", n)
        follower.join()
        follower.check(stored)
        Counter.add("re-attaches after a broken link")
    finally:
        backend.stop()
        network.mend(host)
        server.stop()
