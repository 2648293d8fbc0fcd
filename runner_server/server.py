"""Assemble the gRPC server: Runner, health, reflection, auth, TLS, metrics, drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.iacrunner.v1 import runner_pb2 as pb
from runner_server.auth import TokenAuth
from runner_server.config import ServerConfig
from runner_server.service import RunnerService
from runner_server.servicer import RunnerServicer, add_to_server
from runner_server.toolinfo import detect

log = logging.getLogger("iac_runner_server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Runner"].full_name
MAX_MESSAGE = 128 * 1024 * 1024  # workspace archives and artifacts travel in messages


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert:
        return None
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class RunnerServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.service = RunnerService(config, detect(config.tools))
        interceptors = [TokenAuth(config.token)] if config.token else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        add_to_server(RunnerServicer(self.service), self.server)
        self.health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        creds = server_credentials(config)
        if creds is None:
            self.port = self.server.add_insecure_port(config.listen)
        else:
            self.port = self.server.add_secure_port(config.listen, creds)
        if self.port == 0:
            raise OSError(f"could not listen on {config.listen}")
        self._signals = 0
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self.service.state.start()
        await self.server.start()
        self.service.recover_leftovers()
        await self.service.prepare_spare()
        for name in ("", SERVICE_NAME):
            await self.health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    def on_sigterm(self) -> None:
        """First SIGTERM: drain. Second: cancel every run at once."""
        self._signals += 1
        if self._signals == 1:
            asyncio.get_running_loop().create_task(self.drain())
        else:
            log.info('{"event": "cancel_all", "reason": "second signal"}')
            self.service.cancel_all(force=False)

    async def drain(self) -> None:
        log.info('{"event": "drain", "active": %d}', self.service.active)
        for name in ("", SERVICE_NAME):
            await self.health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.service.drain(self.config.drain_timeout)
        await self.service.wait_idle()
        await self.service.close()
        # Give followers a moment to receive their final result events.
        await self.server.stop(grace=5)
        self.service.state.stop()
        self._stopped.set()

    async def serve(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_sigterm)
        log.info(
            '{"event": "listening", "address": "%s", "port": %d, "runner_id": "%s"}',
            self.config.listen,
            self.port,
            self.config.runner_id,
        )
        await self._stopped.wait()
