"""Bearer-token auth for every method but the health check, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

# Probes (load balancers, `iac-runner-server health`) need no token; they learn nothing.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def _deny(code: grpc.StatusCode, message: str, handler: grpc.RpcMethodHandler) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kind = (handler.request_streaming, handler.response_streaming)
    if kind == (False, False):
        return grpc.unary_unary_rpc_method_handler(abort)
    if kind == (False, True):
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    if kind == (True, False):
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.stream_stream_rpc_method_handler(abort_stream)


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in OPEN_METHODS:
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is None:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token: send metadata 'authorization: Bearer <token>'",
                handler,
            )
        if not hmac.compare_digest(str(given).encode(), self._expected):
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token", handler)
        return handler
