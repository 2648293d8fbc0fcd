"""The backend's gRPC client for runner servers: one channel per runner, auth and TLS applied.

Only `protos/` is shared with runner_server; nothing of it is imported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backend.store.runners import RunnerConnection
from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc

log = logging.getLogger("iac.backend.runner_client")
MAX_MESSAGE = 128 * 1024 * 1024
# Keepalive pings let a dead runner host (cable cut, VM gone) surface as UNAVAILABLE on an
# open stream within ~20 s instead of waiting for TCP's own timeouts.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class RunnerUnreachable(Exception):
    """The runner could not be reached, or the call to it broke; the message says how."""


StateHandler = Callable[[pb.StateCall], Awaitable[pb.StateResponse]]


@dataclass
class RunnerClient:
    connection: RunnerConnection
    channel: grpc.aio.Channel
    stub: pb_grpc.RunnerStub

    @classmethod
    def connect(cls, connection: RunnerConnection) -> RunnerClient:
        if connection.tls_ca_pem or connection.tls_cert_pem:
            creds = grpc.ssl_channel_credentials(
                root_certificates=(connection.tls_ca_pem or "").encode() or None,
                private_key=(connection.tls_key_pem or "").encode() or None,
                certificate_chain=(connection.tls_cert_pem or "").encode() or None,
            )
            channel = grpc.aio.secure_channel(connection.address, creds, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(connection.address, options=CHANNEL_OPTIONS)
        return cls(connection, channel, pb_grpc.RunnerStub(channel))

    @property
    def metadata(self) -> list[tuple[str, str]]:
        token = self.connection.token
        return [("authorization", f"Bearer {token}")] if token else []

    async def info(self, timeout: float = 5.0) -> pb.RunnerInfo:
        reply: pb.RunnerInfo = await self.stub.GetInfo(
            pb.GetInfoRequest(), metadata=self.metadata, timeout=timeout
        )
        return reply

    async def healthy(self, timeout: float = 5.0) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(), metadata=self.metadata, timeout=timeout
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def execute(self, request: pb.ExecuteRequest) -> AsyncIterator[pb.ExecuteEvent]:
        call: AsyncIterator[pb.ExecuteEvent] = self.stub.Execute(request, metadata=self.metadata)
        return call

    def attach(
        self, run_id: str, from_seq: int, state_channel: str = ""
    ) -> AsyncIterator[pb.ExecuteEvent]:
        call: AsyncIterator[pb.ExecuteEvent] = self.stub.Attach(
            pb.AttachRequest(
                run_id=run_id,
                from_seq=from_seq,
                packed_output=True,
                state_channel=state_channel,
            ),
            metadata=self.metadata,
        )
        return call

    async def cancel(self, run_id: str, *, force: bool, timeout: float = 10.0) -> str:
        reply = await self.stub.Cancel(
            pb.CancelRequest(run_id=run_id, force=force), metadata=self.metadata, timeout=timeout
        )
        return str(reply.status)

    async def serve_state(self, channel: str, handle: StateHandler) -> None:
        """Open the runner's ServeState stream as `channel` and answer each state call with
        `handle`, calls concurrently, until the stream ends (RunnerUnreachable when it
        breaks). An answer lost with a broken stream is asked again by the runner."""
        call = self.stub.ServeState(metadata=self.metadata)
        writing = asyncio.Lock()
        answering: set[asyncio.Task[None]] = set()

        async def respond(state_call: pb.StateCall) -> None:
            response = await handle(state_call)
            response.call_id = state_call.call_id
            try:
                async with writing:
                    await call.write(pb.StateReply(response=response))
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                log.debug("state answer to %s lost: %s", self.connection.name, exc)

        try:
            async with writing:
                await call.write(pb.StateReply(hello=pb.StateHello(channel=channel)))
            while True:
                state_call = await call.read()
                if state_call is grpc.aio.EOF:
                    return
                task = asyncio.create_task(respond(state_call))
                answering.add(task)
                task.add_done_callback(answering.discard)
        except grpc.aio.AioRpcError as exc:
            raise RunnerUnreachable(f"{exc.code().name}: {exc.details()}") from None
        finally:
            for task in answering:
                task.cancel()
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()
