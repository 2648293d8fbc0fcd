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
from collections.abc import Callable

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


def _number(kind: type[int] | type[float], flag: str, env: str) -> Callable[[str], float]:
    """An argparse type that names both places a bad number can come from."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'} "
                f"(set by {flag} or {env})"
            ) from None
        return value

    convert.__name__ = kind.__name__
    return convert


# One row per option: flag, environment variable, default ("" = none), type, help. The
# environment variable, when set, replaces the default; the command line wins over both.
_SERVE_OPTIONS: list[tuple[str, str, str, type[int] | type[float] | None, str]] = [
    ("--listen", "IAC_RUNNER_LISTEN", "127.0.0.1:50051", None, "HOST:PORT to serve on"),
    (
        "--workspace-root",
        "IAC_RUNNER_WORKSPACE_ROOT",
        "/tmp/iac-deployments",
        None,
        "runs execute in directories under this root",
    ),
    (
        "--max-concurrent",
        "IAC_RUNNER_MAX_CONCURRENT",
        "4",
        int,
        "runs at once; more get RESOURCE_EXHAUSTED",
    ),
    ("--runner-id", "IAC_RUNNER_ID", "", None, "this runner's id (default: the host name)"),
    ("--token", "IAC_RUNNER_TOKEN", "", None, "require 'authorization: Bearer TOKEN' metadata"),
    ("--tls-cert", "IAC_RUNNER_TLS_CERT", "", None, "server certificate (PEM)"),
    ("--tls-key", "IAC_RUNNER_TLS_KEY", "", None, "server private key (PEM)"),
    (
        "--tls-client-ca",
        "IAC_RUNNER_TLS_CLIENT_CA",
        "",
        None,
        "CA that client certificates must chain to: mTLS",
    ),
    (
        "--metrics-listen",
        "IAC_RUNNER_METRICS_LISTEN",
        "",
        None,
        "HOST:PORT for Prometheus /metrics",
    ),
    (
        "--grace",
        "IAC_RUNNER_GRACE",
        "20",
        float,
        "seconds between SIGINT and SIGTERM when a run is canceled",
    ),
    (
        "--default-timeout",
        "IAC_RUNNER_DEFAULT_TIMEOUT",
        "3600",
        float,
        "timeout of a run that asks for none",
    ),
    (
        "--drain-timeout",
        "IAC_RUNNER_DRAIN_TIMEOUT",
        "300",
        float,
        "on SIGTERM, how long active runs may finish before they are canceled",
    ),
    (
        "--retention-seconds",
        "IAC_RUNNER_RETENTION_SECONDS",
        "600",
        float,
        "how long a finished run stays available to Attach",
    ),
    (
        "--retention-bytes",
        "IAC_RUNNER_RETENTION_BYTES",
        str(4 * 1024 * 1024),
        int,
        "output bytes kept per run for Attach (4 MiB)",
    ),
    (
        "--runner-bin",
        "IAC_RUNNER_BIN",
        "",
        None,
        "path of the iac-runner executable (default: beside this Python)",
    ),
]


def _add_options(
    p: argparse.ArgumentParser,
    options: list[tuple[str, str, str, type[int] | type[float] | None, str]],
) -> None:
    for flag, env, default, kind, text in options:
        shown = f"{env}, {default}" if default else env
        action = p.add_argument(flag, default=_env(env, default), help=f"{text} [{shown}]")
        if kind is not None:
            action.type = _number(kind, flag, env)


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iac-runner-server",
        description="gRPC runner server: runs terraform/tofu through iac-runner and streams "
        "every output line. `iac-runner-server health` probes a running server. Each option "
        "can also be set by the environment variable named in brackets.",
    )
    _add_options(p, _SERVE_OPTIONS)
    p.add_argument(
        "--label",
        type=_label,
        action="append",
        default=None,
        help="KEY=VALUE, repeatable, e.g. provider=aws [IAC_RUNNER_LABELS, comma-separated]",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=_env("IAC_RUNNER_INSECURE") in ("1", "true", "yes"),
        help="allow a non-loopback listener without token or mTLS [IAC_RUNNER_INSECURE]",
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
    _add_options(
        p,
        [
            ("--address", "IAC_RUNNER_LISTEN", "127.0.0.1:50051", None, "HOST:PORT of the runner"),
            (
                "--tls-ca",
                "IAC_RUNNER_TLS_CA",
                "",
                None,
                "CA to verify the server with; enables TLS",
            ),
            (
                "--tls-cert",
                "IAC_RUNNER_HEALTH_TLS_CERT",
                "",
                None,
                "client certificate (PEM) for a runner that requires mTLS",
            ),
            (
                "--tls-key",
                "IAC_RUNNER_HEALTH_TLS_KEY",
                "",
                None,
                "client private key (PEM), with --tls-cert",
            ),
            ("--timeout", "IAC_RUNNER_HEALTH_TIMEOUT", "5", float, "seconds"),
        ],
    )
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
    args = parser.parse_args(argv)
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
