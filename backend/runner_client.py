"""The backend's gRPC client for runner servers: one channel per runner, auth and TLS applied.

The only backend module that knows gRPC: every call's failure comes out as a domain error
(`RunnerBusy`, `RunnerRefused`, `RunGone`, `RunnerUnreachable`) that says what the
caller can do about it. Only `protos/` is shared with runner_server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc

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


class RunnerError(Exception):
    """A call to a runner failed; the message says how (the status and the runner's words)."""


class RunnerBusy(RunnerError):
    """The runner is full or draining: it took nothing; another runner (or later) may."""


class RunnerRefused(RunnerError):
    """The runner refused the call itself (bad request, not permitted, tool missing):
    asking again cannot help."""


class RunGone(RunnerError):
    """The runner does not know the run (it restarted, or forgot it)."""


class RunnerUnreachable(RunnerError):
    """The runner could not be reached, or the call to it broke; it may come back."""


_ERRORS: dict[grpc.StatusCode, type[RunnerError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: RunnerBusy,
    # Draining, or down: either way it took nothing (before a stream started; see _raise).
    grpc.StatusCode.UNAVAILABLE: RunnerBusy,
    grpc.StatusCode.INVALID_ARGUMENT: RunnerRefused,
    grpc.StatusCode.PERMISSION_DENIED: RunnerRefused,
    grpc.StatusCode.UNAUTHENTICATED: RunnerRefused,
    grpc.StatusCode.FAILED_PRECONDITION: RunnerRefused,
    grpc.StatusCode.ALREADY_EXISTS: RunnerRefused,
    grpc.StatusCode.OUT_OF_RANGE: RunnerRefused,
    grpc.StatusCode.UNIMPLEMENTED: RunnerRefused,
    grpc.StatusCode.NOT_FOUND: RunGone,
}


def _raise(exc: grpc.aio.AioRpcError, *, started: bool = False) -> NoReturn:
    """The domain error for a failed call. UNAVAILABLE is a refusal to start (draining) only
    before a stream started; on an open stream it is a broken connection."""
    code = exc.code()
    kind = _ERRORS.get(code, RunnerUnreachable)
    if started and kind is RunnerBusy:
        kind = RunnerUnreachable
    raise kind(f"{code.name}: {exc.details()}") from None


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
    def name(self) -> str:
        return self.connection.name

    @property
    def metadata(self) -> list[tuple[str, str]]:
        token = self.connection.token
        return [("authorization", f"Bearer {token}")] if token else []

    def connected(self) -> bool:
        """Whether the channel is connected now, asking nothing of the runner: a server that
        went away (its connection closed) shows here at once, before any call."""
        state = self.channel.get_state(try_to_connect=False)
        return state is grpc.ChannelConnectivity.READY

    async def info(self, timeout: float = 5.0) -> pb.RunnerInfo:
        try:
            reply: pb.RunnerInfo = await self.stub.GetInfo(
                pb.GetInfoRequest(), metadata=self.metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise RunnerUnreachable(f"{exc.code().name}: {exc.details()}") from None
        return reply

    async def execute(self, request: pb.ExecuteRequest) -> AsyncIterator[pb.ExecuteEvent]:
        """The run's events. Before its first event: RunnerBusy (try elsewhere or later),
        RunnerRefused; after: RunnerUnreachable when the stream breaks (Attach resumes)."""
        started = False
        try:
            async for event in self.stub.Execute(request, metadata=self.metadata):
                started = True
                yield event
        except grpc.aio.AioRpcError as exc:
            _raise(exc, started=started)

    async def attach(
        self, run_id: str, from_seq: int, state_channel: str = ""
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """A live or retained run's events from `from_seq` on; RunGone when the runner no
        longer knows it. Its state traffic goes to `state_channel` from now on."""
        request = pb.AttachRequest(
            run_id=run_id, from_seq=from_seq, packed_output=True, state_channel=state_channel
        )
        try:
            async for event in self.stub.Attach(request, metadata=self.metadata):
                yield event
        except grpc.aio.AioRpcError as exc:
            _raise(exc, started=True)

    async def cancel(self, run_id: str, *, force: bool, timeout: float = 10.0) -> str:
        try:
            reply = await self.stub.Cancel(
                pb.CancelRequest(run_id=run_id, force=force),
                metadata=self.metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            _raise(exc, started=True)
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
                log.debug("state answer to %s lost: %s", self.name, exc)

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
