"""gRPC transport for `iacrunner.v1.Runner`: maps calls to RunnerService, errors to status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc
from runner_server.service import RunnerError, RunnerService, check_strings

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


class RunnerServicer(pb_grpc.RunnerServicer):  # type: ignore[misc]
    def __init__(self, service: RunnerService) -> None:
        self.service = service

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteEvent]:
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
        try:
            check_strings(request)
            run = self.service.get(request.run_id)
            async for event in self.service.events(
                run, request.from_seq, packed=request.packed_output
            ):
                yield event
        except RunnerError as exc:
            await context.abort(STATUS[exc.kind], str(exc))

    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        try:
            check_strings(request)
            status = self.service.cancel(request.run_id, force=request.force)
        except RunnerError as exc:
            await context.abort(STATUS[exc.kind], str(exc))
        return pb.CancelResponse(run_id=request.run_id, status=status)

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunnerInfo:
        return self.service.info()
