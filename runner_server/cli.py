"""`iac-runner-server`: serve the Runner gRPC API, or probe one (`iac-runner-server health`)."""

from __future__ import annotations

import os

# grpc's fork support is for fork without exec; we spawn with fork+exec, and the
# docs advise turning it off. It must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import logging
import sys

from runner_server.config import ServerConfig
from runner_stdio.tools import ToolError, parse_tool_entries


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {value!r} must be KEY=VALUE, e.g. provider=aws")
    return key, val


def _labels_from_env(text: str) -> list[tuple[str, str]]:
    return [_label(item.strip()) for item in text.split(",") if item.strip()]


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iac-runner-server",
        description="gRPC runner server: runs terraform/tofu through iac-runner and streams "
        "every output line. `iac-runner-server health` probes a running server.",
    )
    p.add_argument(
        "--listen",
        default=_env("IAC_RUNNER_LISTEN", "127.0.0.1:50051"),
        help="HOST:PORT to serve on [IAC_RUNNER_LISTEN, 127.0.0.1:50051]",
    )
    p.add_argument(
        "--workspace-root",
        default=_env("IAC_RUNNER_WORKSPACE_ROOT", "/tmp/iac-deployments"),
        help="runs execute in directories under this root "
        "[IAC_RUNNER_WORKSPACE_ROOT, /tmp/iac-deployments]",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=int(_env("IAC_RUNNER_MAX_CONCURRENT", "4")),
        help="runs at once; more get RESOURCE_EXHAUSTED [IAC_RUNNER_MAX_CONCURRENT, 4]",
    )
    p.add_argument(
        "--label",
        type=_label,
        action="append",
        default=None,
        help="KEY=VALUE, repeatable, e.g. provider=aws [IAC_RUNNER_LABELS, comma-separated]",
    )
    p.add_argument(
        "--runner-id",
        default=_env("IAC_RUNNER_ID", ""),
        help="this runner's id [IAC_RUNNER_ID, the host name]",
    )
    p.add_argument(
        "--token",
        default=_env("IAC_RUNNER_TOKEN"),
        help="require 'authorization: Bearer TOKEN' metadata [IAC_RUNNER_TOKEN]",
    )
    p.add_argument(
        "--tls-cert",
        default=_env("IAC_RUNNER_TLS_CERT"),
        help="server certificate (PEM) [IAC_RUNNER_TLS_CERT]",
    )
    p.add_argument(
        "--tls-key",
        default=_env("IAC_RUNNER_TLS_KEY"),
        help="server private key (PEM) [IAC_RUNNER_TLS_KEY]",
    )
    p.add_argument(
        "--tls-client-ca",
        default=_env("IAC_RUNNER_TLS_CLIENT_CA"),
        help="CA that client certificates must chain to: mTLS [IAC_RUNNER_TLS_CLIENT_CA]",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=_env("IAC_RUNNER_INSECURE") in ("1", "true", "yes"),
        help="allow a non-loopback listener without token or mTLS [IAC_RUNNER_INSECURE]",
    )
    p.add_argument(
        "--metrics-listen",
        default=_env("IAC_RUNNER_METRICS_LISTEN"),
        help="HOST:PORT for Prometheus /metrics [IAC_RUNNER_METRICS_LISTEN, off]",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=float(_env("IAC_RUNNER_GRACE", "20")),
        help="seconds between SIGINT and SIGTERM when a run is canceled [IAC_RUNNER_GRACE, 20]",
    )
    p.add_argument(
        "--default-timeout",
        type=float,
        default=float(_env("IAC_RUNNER_DEFAULT_TIMEOUT", "3600")),
        help="timeout of a run that asks for none [IAC_RUNNER_DEFAULT_TIMEOUT, 3600]",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=float(_env("IAC_RUNNER_DRAIN_TIMEOUT", "300")),
        help="on SIGTERM, how long active runs may finish before they are canceled "
        "[IAC_RUNNER_DRAIN_TIMEOUT, 300]",
    )
    p.add_argument(
        "--retention-seconds",
        type=float,
        default=float(_env("IAC_RUNNER_RETENTION_SECONDS", "600")),
        help="how long a finished run stays available to Attach "
        "[IAC_RUNNER_RETENTION_SECONDS, 600]",
    )
    p.add_argument(
        "--retention-bytes",
        type=int,
        default=int(_env("IAC_RUNNER_RETENTION_BYTES", str(4 * 1024 * 1024))),
        help="output bytes kept per run for Attach [IAC_RUNNER_RETENTION_BYTES, 4 MiB]",
    )
    p.add_argument(
        "--runner-bin",
        default=_env("IAC_RUNNER_BIN"),
        help="path of the iac-runner executable [IAC_RUNNER_BIN, beside this Python]",
    )
    p.add_argument(
        "--accept",
        action="append",
        default=None,
        help="an operation this runner accepts: plan, apply or destroy; repeatable "
        "(default: all). A plan-only runner refuses every state-changing command "
        "with PERMISSION_DENIED [IAC_RUNNER_ACCEPT, comma-separated]",
    )
    p.add_argument(
        "--tool",
        action="append",
        default=None,
        metavar="NAME@VERSION=PATH",
        help="another binary of a tool, repeatable, e.g. "
        "terraform@1.9.8=/opt/terraform/1.9.8/terraform; the version is read from "
        "the binary (`version -json`) [IAC_RUNNER_TOOLS, comma-separated]",
    )
    return p


def health_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iac-runner-server health",
        description="Exit 0 if the runner at ADDRESS reports SERVING on grpc.health.v1, else 1.",
    )
    p.add_argument(
        "--address",
        default=_env("IAC_RUNNER_LISTEN", "127.0.0.1:50051"),
        help="HOST:PORT of the runner [IAC_RUNNER_LISTEN, 127.0.0.1:50051]",
    )
    p.add_argument(
        "--tls-ca",
        default=_env("IAC_RUNNER_TLS_CA"),
        help="CA to verify the server with; enables TLS",
    )
    p.add_argument(
        "--tls-cert",
        default=_env("IAC_RUNNER_HEALTH_TLS_CERT"),
        help="client certificate (PEM) for a runner that requires mTLS",
    )
    p.add_argument(
        "--tls-key",
        default=_env("IAC_RUNNER_HEALTH_TLS_KEY"),
        help="client private key (PEM), with --tls-cert",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds [5]")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    import socket

    labels = dict(_labels_from_env(_env("IAC_RUNNER_LABELS")))
    labels.update(dict(args.label or []))
    accept = args.accept or [c for c in _env("IAC_RUNNER_ACCEPT").split(",") if c]
    return ServerConfig(
        listen=args.listen,
        workspace_root=args.workspace_root,
        max_concurrent=args.max_concurrent,
        labels=labels,
        runner_id=args.runner_id or socket.gethostname(),
        token=args.token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
        metrics_listen=args.metrics_listen,
        grace=args.grace,
        default_timeout=args.default_timeout,
        drain_timeout=args.drain_timeout,
        retention_seconds=args.retention_seconds,
        retention_bytes=args.retention_bytes,
        runner_bin=args.runner_bin,
        accept=accept,
        tools=parse_tool_entries(",".join(args.tool or []) or _env("IAC_RUNNER_TOOLS")),
    )


def health_main(argv: list[str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    args = health_parser().parse_args(argv)
    if args.tls_ca:
        from pathlib import Path

        creds = grpc.ssl_channel_credentials(
            Path(args.tls_ca).read_bytes(),
            private_key=Path(args.tls_key).read_bytes() if args.tls_key else None,
            certificate_chain=Path(args.tls_cert).read_bytes() if args.tls_cert else None,
        )
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["health"]:
        return health_main(argv[1:])
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    parser = serve_parser()
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:  # a malformed number in an IAC_RUNNER_* variable
        parser.error(str(exc))
    try:
        config = config_from_args(args)
        config.check()
    except (ValueError, ToolError) as exc:
        print(f"iac-runner-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from runner_server.server import RunnerServer

    async def run() -> None:
        if config.metrics_listen:
            from prometheus_client import start_http_server

            host, _, port = config.metrics_listen.rpartition(":")
            start_http_server(int(port), addr=host or "127.0.0.1")
        server = RunnerServer(config)
        await server.serve()

    try:
        asyncio.run(run())
    except (OSError, ToolError) as exc:
        print(f"iac-runner-server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
