"""gRPC transport for `iacrunner.v1.Runner`: maps calls to RunnerService, errors to status codes.

Requests are parsed here, not by grpc: bytes that are no valid message (a string with bad
UTF-8, such as a lone surrogate, or no protobuf at all) are INVALID_ARGUMENT with the
reason, instead of UNKNOWN and a traceback in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from runner_server.requests import RunnerError, check_strings
from runner_server.service import RunnerService

STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "out_of_range": grpc.StatusCode.OUT_OF_RANGE,
    "permission": grpc.StatusCode.PERMISSION_DENIED,
}


class Undecodable:
    """What arrived instead of a request that could not be parsed."""

    def __init__(self, reason: str) -> None:
        self.message = f"{reason} (a string must be valid UTF-8: no lone surrogate)"


def _parser(message_type: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return parse


async def _refuse_undecodable(request: object, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_to_server(servicer: RunnerServicer, server: grpc.aio.Server) -> None:
    """pb_grpc.add_RunnerServicer_to_server, with requests parsed by `_parser`: every
    method of the service, as the .proto declares it."""
    service = pb.DESCRIPTOR.services_by_name["Runner"]
    handlers = {
        method.name: _HANDLERS[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            request_deserializer=_parser(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


class RunnerServicer(pb_grpc.RunnerServicer):  # type: ignore[misc]
    def __init__(self, service: RunnerService) -> None:
        self.service = service

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
        await _refuse_undecodable(request, context)
        try:
            run = await self.service.start(request)
        except RunnerError as exc:
            await context.abort(STATUS[exc.kind], str(exc))
        try:
            async for event in self.service.events(run, packed=request.packed_output):
                yield event
        except asyncio.CancelledError:
            # The client cancelled or went away.
            if request.on_disconnect == pb.CANCEL:
                run.cancel(force=False)
            raise

    async def Attach(
        self, request: pb.AttachRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
        await _refuse_undecodable(request, context)
        try:
            check_strings(request)
            run = await self.service.attach(request.run_id, request.state_channel)
            async for event in self.service.events(
                run, request.from_seq, packed=request.packed_output
            ):
                yield event
        except RunnerError as exc:
            await context.abort(STATUS[exc.kind], str(exc))

    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        await _refuse_undecodable(request, context)
        try:
            check_strings(request)
            status = self.service.cancel(request.run_id, force=request.force)
        except RunnerError as exc:
            await context.abort(STATUS[exc.kind], str(exc))
        return pb.CancelResponse(run_id=request.run_id, status=status)

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunnerInfo:
        await _refuse_undecodable(request, context)
        return self.service.info()

    async def ServeState(
        self, request_iterator: AsyncIterator[pb.StateReply], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StateCall]:
        try:
            async for call in self.service.state.serve(request_iterator):
                yield call
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
