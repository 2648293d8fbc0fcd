"""Auth: bearer tokens on every method, mTLS, and the refusal to listen openly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.certs import make_ca, make_leaf
from tests.procs import BIN, RunnerProcess, start_runner

TOKEN = "s3cret-token"


@pytest.fixture
def token_runner(fake_env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    server = start_runner(tmp_path, fake_env, token=TOKEN)
    yield server
    server.stop()


def _calls(stub):  # type: ignore[no-untyped-def]
    return {
        "Execute": lambda md: list(
            stub.Execute(pb.ExecuteRequest(tool="terraform", command="version"), metadata=md)
        ),
        "Attach": lambda md: list(stub.Attach(pb.AttachRequest(run_id="x"), metadata=md)),
        "Cancel": lambda md: stub.Cancel(pb.CancelRequest(run_id="x"), metadata=md),
        "GetInfo": lambda md: stub.GetInfo(pb.GetInfoRequest(), metadata=md),
    }


@pytest.mark.parametrize(
    "metadata", [[], [("authorization", "Bearer wrong")], [("authorization", TOKEN)]]
)
def test_every_method_refuses_a_missing_or_wrong_token(
    token_runner: RunnerProcess, metadata
) -> None:  # type: ignore[no-untyped-def]
    for name, call in _calls(token_runner.stub()).items():
        with pytest.raises(grpc.RpcError) as info:
            call(metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert "token" in info.value.details()
    assert not list(token_runner.workspace_root.iterdir()), "nothing ran"


def test_right_token_is_served_and_health_needs_none(token_runner: RunnerProcess) -> None:
    stub = token_runner.stub()
    md = [("authorization", f"Bearer {TOKEN}")]
    events = list(stub.Execute(pb.ExecuteRequest(tool="terraform", command="version"), metadata=md))
    assert events[-1].result.success
    with pytest.raises(grpc.RpcError) as info:
        stub.Cancel(pb.CancelRequest(run_id="x"), metadata=md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    health = health_pb2_grpc.HealthStub(token_runner.channels[0])
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_mtls_accepts_the_trusted_client_and_refuses_others(
    fake_env: dict[str, str], tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "ca")
    rogue_ca = make_ca(tmp_path, "rogue-ca")
    server_cert = make_leaf(tmp_path, "server", ca, server=True)
    client = make_leaf(tmp_path, "client", ca, server=False)
    rogue = make_leaf(tmp_path, "rogue", rogue_ca, server=False)
    server = start_runner(
        tmp_path,
        fake_env,
        "--tls-cert",
        str(server_cert[0]),
        "--tls-key",
        str(server_cert[1]),
        "--tls-client-ca",
        str(ca[0]),
    )
    try:

        def creds(pair: tuple[Path, Path] | None) -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(
                root_certificates=ca[0].read_bytes(),
                private_key=pair[1].read_bytes() if pair else None,
                certificate_chain=pair[0].read_bytes() if pair else None,
            )

        info = server.stub(creds(client)).GetInfo(pb.GetInfoRequest(), timeout=10)
        assert info.runner_id == "runner"
        for pair in (rogue, None):
            with pytest.raises(grpc.RpcError) as err:
                server.stub(creds(pair)).GetInfo(pb.GetInfoRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A plaintext client gets nowhere either.
        with pytest.raises(grpc.RpcError):
            server.stub().GetInfo(pb.GetInfoRequest(), timeout=5)
    finally:
        server.stop()


def test_refuses_non_loopback_listener_without_auth(
    tool_env: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            str(BIN / "iac-runner-server"),
            "--listen",
            "0.0.0.0:0",
            "--workspace-root",
            str(tmp_path),
        ],
        env=tool_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to listen on non-loopback address '0.0.0.0' without auth" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--listen", "nonsense"], {}, "must be HOST:PORT"),
        (["--tls-cert", "/nonexistent.pem"], {}, "file '/nonexistent.pem' does not exist"),
        (["--label", "novalue"], {}, "must be KEY=VALUE"),
        (["--max-concurrent", "0"], {}, "at least 1"),
        (["--grace", "soon"], {}, "'soon' is not a number (set by --grace or IAC_RUNNER_GRACE)"),
        (
            [],
            {"IAC_RUNNER_MAX_CONCURRENT": "four"},
            "'four' is not an integer (set by --max-concurrent or IAC_RUNNER_MAX_CONCURRENT)",
        ),
        (["health"], {"IAC_RUNNER_HEALTH_TIMEOUT": "x"}, "'x' is not a number"),
    ],
)
def test_bad_configuration_fails_fast_with_one_line(
    tool_env: dict[str, str], args: list[str], env: dict[str, str], fragment: str
) -> None:
    proc = subprocess.run(
        [str(BIN / "iac-runner-server"), *args],
        env={**tool_env, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_health_probe_over_mtls(fake_env: dict[str, str], tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    cert, key = make_leaf(tmp_path, "server", ca, server=True)
    client = make_leaf(tmp_path, "client", ca, server=False)
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
        probe = [
            str(BIN / "iac-runner-server"),
            "health",
            "--address",
            server.address,
            "--tls-ca",
            str(ca[0]),
        ]
        ok = subprocess.run(
            [*probe, "--tls-cert", str(client[0]), "--tls-key", str(client[1])],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ok.returncode == 0 and ok.stdout.strip() == "SERVING", ok.stderr
        refused = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
        assert refused.returncode == 1 and "unhealthy" in refused.stderr
    finally:
        server.stop()
