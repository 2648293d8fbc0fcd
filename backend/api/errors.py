"""Domain error → HTTP response. Every error body is ``{"detail": "<what to fix>"}``, except
a state-lock conflict, whose body is the lock holder's info as Terraform expects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from backend.crypto import DecryptionFailed
from backend.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    StateLocked,
    TooLarge,
    Unauthenticated,
)

STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (Invalid, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
]


def _detail(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_request: Request, exc: Exception) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handler


async def _locked(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StateLocked)
    return JSONResponse(exc.holder, status_code=423)


async def _decryption(_request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=500)


def install(app: FastAPI) -> None:
    for error, status in STATUS:
        app.add_exception_handler(error, _detail(status))
    app.add_exception_handler(StateLocked, _locked)
    app.add_exception_handler(DecryptionFailed, _decryption)
    # Anything else from the domain is a bug in the mapping: say so rather than hide it.
    app.add_exception_handler(DomainError, _detail(500))
