"""`iac-runner-server`: serve the Runner gRPC API, or probe one (`iac-runner-server health`)."""

from __future__ import annotations

import os

# grpc's fork support is for fork without exec; we spawn with fork+exec, and the
# docs advise turning it off. It must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import sys

from runner_server.config import HealthConfig, ServerConfig
from runner_server.flags import ConfigError, add_options, given, load, set_by
from runner_stdio.tools import ToolError

PRECEDENCE = (
    "Each option can also be set by the environment variable named in brackets; the "
    "command line wins over the environment, which wins over the default."
)


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iac-runner-server",
        description="gRPC runner server: runs terraform/tofu through iac-runner and streams "
        "every output line. `iac-runner-server health` probes a running server.",
        epilog=PRECEDENCE,
    )
    add_options(p, ServerConfig)
    return p


def health_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iac-runner-server health",
        description="Exit 0 if the runner at ADDRESS reports SERVING on grpc.health.v1, else 1 "
        "(2: bad options).",
        epilog=PRECEDENCE,
    )
    add_options(p, HealthConfig)
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server's settings from parsed flags, the environment and the defaults; ConfigError
    (one line) when a value is bad."""
    return load(ServerConfig, given(args, ServerConfig))


def health_config_from_args(args: argparse.Namespace) -> HealthConfig:
    return load(HealthConfig, given(args, HealthConfig))


def health_main(argv: list[str]) -> int:
    try:
        config = health_config_from_args(health_parser().parse_args(argv))
    except ConfigError as exc:
        print(f"iac-runner-server health: {exc}", file=sys.stderr)
        return 2
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if config.tls_ca:
        from pathlib import Path

        creds = grpc.ssl_channel_credentials(
            Path(config.tls_ca).read_bytes(),
            private_key=Path(config.tls_key).read_bytes() if config.tls_key else None,
            certificate_chain=Path(config.tls_cert).read_bytes() if config.tls_cert else None,
        )
        channel = grpc.secure_channel(config.address, creds)
    else:
        channel = grpc.insecure_channel(config.address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=config.timeout
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
    try:
        config = config_from_args(serve_parser().parse_args(argv))
    except ConfigError as exc:
        print(f"iac-runner-server: {exc}", file=sys.stderr)
        return 2
    # Imported once the settings are good: a bad option or --help is answered sooner.
    import asyncio
    import logging

    from runner_server.server import RunnerServer

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    async def run() -> None:
        if config.metrics_listen:
            from prometheus_client import start_http_server

            host, _, port = config.metrics_listen.rpartition(":")
            try:
                start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
            except OSError as exc:
                raise OSError(
                    f"cannot serve metrics on {config.metrics_listen!r} "
                    f"({set_by(ServerConfig, 'metrics_listen')}): {exc}"
                ) from None
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
