"""Auth on every entry point: every API route, the runner's state endpoint, every gRPC method.

The credentials tried are the ones an attacker could have: none, a wrong token, an
expired or revoked API token, the API token where a runner token is expected (and the
reverse), and another run's state credentials read from its terraform's environment
(what a hostile configuration of one deployment can see), used against another run,
against the API and against the runner. mTLS with a client certificate of
another CA, an expired one of the right CA, and none. Nothing gets through, and nothing
changes. (tests/runner_server/test_auth.py and tests/backend/api/test_auth_health.py cover the
basic cases; this adds the cross-credential ones and the full method/route lists.)
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from protos.iacrunner.v1 import runner_pb2 as pb
from tests.backend.platform import TOKEN, Backend, start_backend
from tests.certs import make_ca, make_leaf
from tests.conftest import pids_matching, wait_for
from tests.procs import RunnerProcess, make_fake_tool
from tests.reliability.harness import Counter, ancestors, cmdline, start_server

RUNNER_TOKEN = "auth-runner-token-0123456789"
TERMINAL = ("succeeded", "failed", "canceled", "timed_out")
MARKER = f"74.{os.getpid() % 10000:04d}"
LONG = f"""\
resource "terraform_data" "slow" {{
  provisioner "local-exec" {{
    command = "sleep {MARKER}"
  }}
}}
"""


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _tokens(url: str) -> tuple[str, str]:
    """An expired and a revoked API token, made the way an operator's would be."""
    from backend.db import Database
    from backend.models import utcnow
    from backend.store import tokens

    db = Database(url)
    try:
        async with db.session() as session:
            past = utcnow() - datetime.timedelta(hours=1)
            _, expired = await tokens.create_token(session, "expired", expires_at=past)
            row, revoked = await tokens.create_token(session, "revoked")
            await tokens.revoke_token(session, row.id)
    finally:
        await db.dispose()
    return expired, revoked


class Platform:
    def __init__(self, backend: Backend, runner: RunnerProcess, run_a: dict[str, Any]) -> None:
        self.backend = backend
        self.runner = runner
        self.run_a = run_a
        self.user = ""
        self.password = ""  # run A's state password, read from its terraform's environment
        self.address = ""  # the runner's loopback state endpoint of run A
        self.expired = ""
        self.revoked = ""


@pytest.fixture(scope="module")
def platform_a(rel_env: dict[str, str], module_tmp: Path) -> Iterator[Platform]:
    runner = start_server(
        module_tmp, rel_env, "auth-runner", "--label", "provider=aws", token=RUNNER_TOKEN
    )
    db_url = f"sqlite:///{module_tmp / 'iac.db'}"
    backend = start_backend(module_tmp, rel_env, db_url)
    try:
        backend.register("auth-runner", runner.address, token=RUNNER_TOKEN)
        backend.wait_runners_healthy("auth-runner")
        backend.deploy("b", {"main.tf": 'resource "terraform_data" "x" {}\n'})
        done = backend.wait(backend.start("b", "apply", auto_approve=True)["id"], *TERMINAL)
        assert done["status"] == "succeeded", done
        backend.deploy("a", {"main.tf": LONG})
        run_a = backend.start("a", "apply", auto_approve=True)
        sleeper = wait_for(lambda: pids_matching(f"sleep {MARKER}"), timeout=120)
        assert isinstance(sleeper, list)
        platform = Platform(backend, runner, run_a)
        terraform = next(
            p for p in ancestors(sleeper[0]) if cmdline(p).split(" ")[0].endswith("terraform")
        )
        environ = Path(f"/proc/{terraform}/environ").read_bytes().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        platform.user, platform.password = env["TF_HTTP_USERNAME"], env["TF_HTTP_PASSWORD"]
        platform.address = env["TF_HTTP_ADDRESS"]
        assert f"-r{run_a['id']}-apply-" in platform.user
        platform.expired, platform.revoked = asyncio.run(_tokens(db_url))
        yield platform
    finally:
        if "run_a" in locals() and backend.run(run_a["id"])["status"] not in TERMINAL:
            backend.call("POST", f"/runs/{run_a['id']}/cancel", 200, params={"force": True})
            backend.wait(run_a["id"], *TERMINAL)
        backend.stop()
        runner.stop()


def _api_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the API that needs an API token, from the app's schema."""
    from backend.app import create_app
    from backend.config import Settings

    app = create_app(Settings.load(env_file=None, database_url="sqlite:///unused.db"))
    found = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/state/"):
            continue  # public probes; Terraform's state endpoint (per-run credentials, below)
        for method in operations:
            found.append((method.upper(), path))
    return found


def _fill(path: str, platform: Platform) -> str:
    values = {"name": "a", "run_id": platform.run_a["id"], "version": 1, "key": "x"}
    values |= {"version_id": 1, "token_id": 1, "schedule_id": 1, "destination_id": 1}
    return path.format(**values)


def _snapshot(backend: Backend) -> Any:
    runs = [(r["id"], r["status"], r["cancel_requested"]) for r in backend.call("GET", "/runs")]
    deployments = backend.call("GET", "/deployments")
    variables = backend.call("GET", "/deployments/a/variables")
    runners = [(r["name"], r["address"], r["labels"]) for r in backend.call("GET", "/runners")]
    tokens = backend.call("GET", "/tokens")
    return runs, deployments, variables, runners, tokens


def test_every_api_route_refuses_every_wrong_credential(platform_a: Platform) -> None:
    backend, p = platform_a.backend, platform_a
    routes = _api_routes()
    assert len(routes) >= 20, routes
    credentials = {
        "none": None,
        "wrong token": "Bearer wrong-token-0123456789",
        "scheme only": "Bearer",
        "expired token": f"Bearer {p.expired}",
        "revoked token": f"Bearer {p.revoked}",
        "runner token": f"Bearer {RUNNER_TOKEN}",
        "run A's state password": f"Bearer {p.password}",
        "run A's state credentials": _basic(p.user, p.password),
        "API token as basic": _basic("admin", TOKEN),
    }
    before = _snapshot(backend)
    # A connection per request: hundreds of requests on a loaded machine otherwise meet
    # uvicorn closing an idle keep-alive connection just as one is sent on it.
    client = httpx.Client(
        base_url=backend.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )
    for method, path in routes:
        url = _fill(path, p)
        for what, header in credentials.items():
            headers = {"Authorization": header} if header is not None else {}
            body: dict[str, object] | None = {} if method in ("POST", "PUT") else None
            response = client.request(method, url, headers=headers, json=body)
            Counter.add("auth attempts refused (API)")
            assert response.status_code == 401, (method, path, what, response.text)
            assert response.json()["detail"], (method, path, what)
    client.close()
    assert _snapshot(backend) == before
    assert backend.run(p.run_a["id"])["status"] == "applying"


STATE_METHODS = ["GET", "POST", "DELETE", "LOCK", "UNLOCK"]


def test_the_state_endpoint_takes_only_the_runs_own_credentials(platform_a: Platform) -> None:
    """Terraform reaches the state only through its runner's loopback endpoint, with a
    password made for its run alone; the backend has no state endpoint at all."""
    backend, p = platform_a.backend, platform_a
    state_a = backend.call("GET", "/deployments/a/state", 200)
    other_run = p.address.replace(p.user, p.user.replace("-apply-", "-plan-"))
    cases = {
        "none": (p.address, None),
        "API token": (p.address, f"Bearer {TOKEN}"),
        "API token as password": (p.address, _basic(p.user, TOKEN)),
        "runner token as password": (p.address, _basic(p.user, RUNNER_TOKEN)),
        "wrong password": (p.address, _basic(p.user, p.password[:-2] + "xx")),
        "another user": (p.address, _basic("admin", p.password)),
        "run A's password for another run": (other_run, _basic(p.user, p.password)),
    }
    for method in STATE_METHODS:
        for what, (url, header) in cases.items():
            headers = {"Authorization": header} if header is not None else {}
            response = httpx.request(method, url, headers=headers, content=b"{}", timeout=30)
            Counter.add("auth attempts refused (state endpoint)")
            assert response.status_code == 401, (method, what, response.text)
            assert response.json()["detail"], (method, what)
        # The backend serves no state to anyone over HTTP, whatever they send.
        for header in (f"Bearer {TOKEN}", _basic(p.user, p.password)):
            response = httpx.request(
                method,
                backend.url + "/api/v1/state/a",
                headers={"Authorization": header},
                content=b"{}",
                timeout=30,
            )
            Counter.add("auth attempts refused (state endpoint)")
            assert response.status_code in (404, 405), (method, response.text)
    assert backend.call("GET", "/deployments/a/state", 200) == state_a
    # The stolen credentials were real: run A's own terraform gets its state with them.
    own = httpx.get(p.address, headers={"Authorization": _basic(p.user, p.password)}, timeout=30)
    assert own.status_code in (200, 204), own.text


def _grpc_calls(channel: grpc.Channel, run_id: str) -> dict[str, Any]:
    """One call of each method of the runner, as raw bytes (so any credential can be
    tried on any method, reflection included)."""
    reflect = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

    def stream(path: str, body: bytes) -> Any:
        return lambda md: list(channel.unary_stream(path)(body, metadata=md, timeout=30))

    def unary(path: str, body: bytes) -> Any:
        return lambda md: channel.unary_unary(path)(body, metadata=md, timeout=30)

    def bidi(path: str, body: bytes) -> Any:
        return lambda md: list(channel.stream_stream(path)(iter([body]), metadata=md, timeout=30))

    execute = pb.ExecuteRequest(tool="terraform", command="version").SerializeToString()
    return {
        "Execute": stream("/iacrunner.v1.Runner/Execute", execute),
        "Attach": stream(
            "/iacrunner.v1.Runner/Attach", pb.AttachRequest(run_id=run_id).SerializeToString()
        ),
        "Cancel": unary(
            "/iacrunner.v1.Runner/Cancel",
            pb.CancelRequest(run_id=run_id, force=True).SerializeToString(),
        ),
        "GetInfo": unary("/iacrunner.v1.Runner/GetInfo", b""),
        "reflection": bidi(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", reflect
        ),
        # Whoever opens it answers (and reads) terraform's state calls.
        "ServeState": bidi(
            "/iacrunner.v1.Runner/ServeState",
            pb.StateReply(hello=pb.StateHello(channel="thief")).SerializeToString(),
        ),
    }  # fmt: skip


def test_every_grpc_method_refuses_every_wrong_credential(platform_a: Platform) -> None:
    p = platform_a
    info = pb.RunnerInfo.FromString(
        grpc.insecure_channel(p.runner.address)
        .unary_unary("/iacrunner.v1.Runner/GetInfo")(
            b"", metadata=[("authorization", f"Bearer {RUNNER_TOKEN}")], timeout=30
        )
    )  # fmt: skip
    # The backend names its runner-side runs [<database prefix>-]r<run id>-<phase>-...
    victim = next(r for r in info.active_runs if f"r{p.run_a['id']}-apply-" in r)
    credentials = {
        "none": [],
        "wrong token": [("authorization", "Bearer wrong")],
        "token without scheme": [("authorization", RUNNER_TOKEN)],
        "API token": [("authorization", f"Bearer {TOKEN}")],
        "run A's state password": [("authorization", f"Bearer {p.password}")],
        "run A's state credentials": [("authorization", _basic(p.user, p.password))],
    }
    with grpc.insecure_channel(p.runner.address) as channel:
        calls = _grpc_calls(channel, victim)
        good = [("authorization", f"Bearer {RUNNER_TOKEN}")]
        calls["reflection"](good)  # it exists: a refusal below is the auth's
        for method, call in calls.items():
            for what, metadata in credentials.items():
                with pytest.raises(grpc.RpcError) as info_:
                    call(metadata)
                Counter.add("auth attempts refused (gRPC)")
                assert info_.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, what)
                assert "token" in (info_.value.details() or ""), (method, what)
    # The forced Cancel of run A's step never arrived, nor did any Execute.
    assert p.backend.run(p.run_a["id"])["status"] == "applying"
    assert pids_matching(f"sleep {MARKER}")
    starts = [e for e in p.runner.log.read_text().splitlines() if '"run_start"' in e]
    assert not any('"command": "version"' in line for line in starts), starts


def test_revoked_state_credentials_are_refused_once_the_run_ends(platform_a: Platform) -> None:
    backend, p = platform_a.backend, platform_a
    backend.call("POST", f"/runs/{p.run_a['id']}/cancel", 200, params={"force": True})
    assert backend.wait(p.run_a["id"], *TERMINAL)["status"] == "canceled"
    response = httpx.get(
        p.address, headers={"Authorization": _basic(p.user, p.password)}, timeout=30
    )
    assert response.status_code == 401, response.text


def test_mtls_refuses_untrusted_expired_and_missing_client_certs_on_every_method(
    rel_env: dict[str, str], tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "ca")
    server_cert = make_leaf(tmp_path, "server", ca, server=True)
    trusted = make_leaf(tmp_path, "client", ca, server=False)
    rogue = make_leaf(tmp_path, "rogue", make_ca(tmp_path, "rogue-ca"), server=False)
    expired = make_leaf(tmp_path, "expired", ca, server=False, expired=True)
    env = {**rel_env, "IAC_RUNNER_TERRAFORM_BIN": make_fake_tool(tmp_path)}
    server = start_server(
        tmp_path, env, "mtls", "--tls-cert", str(server_cert[0]), "--tls-key",
        str(server_cert[1]), "--tls-client-ca", str(ca[0]),
    )  # fmt: skip

    def channel(pair: tuple[Path, Path] | None) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca[0].read_bytes(),
            private_key=pair[1].read_bytes() if pair else None,
            certificate_chain=pair[0].read_bytes() if pair else None,
        )
        options = [("grpc.ssl_target_name_override", "localhost")]
        return grpc.secure_channel(server.address, creds, options=options)

    try:
        with channel(trusted) as ok:
            assert _grpc_calls(ok, "x")["GetInfo"]([])  # the right certificate works
        for what, pair in {"other CA": rogue, "expired": expired, "none": None}.items():
            with channel(pair) as bad:
                calls = _grpc_calls(bad, "x")
                calls["health"] = lambda md, c=bad: c.unary_unary("/grpc.health.v1.Health/Check")(
                    b"", metadata=md, timeout=30
                )
                for method, call in calls.items():
                    with pytest.raises(grpc.RpcError) as info:
                        call([])
                    Counter.add("auth attempts refused (mTLS)")
                    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, (what, method)
        assert '"run_start"' not in server.log.read_text()
    finally:
        server.stop()
