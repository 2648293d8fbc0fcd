"""Domain error → HTTP response. Every error body is ``{"detail": "<what to fix>"}``, except
a state-lock conflict, whose body is the lock holder's info as Terraform expects.

Request validation errors too: one line naming each field and what was wrong, instead of
FastAPI's list, which echoes the input (and failed to encode the values JSON cannot hold).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
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


WHERE = {"body": "body field", "query": "query parameter", "path": "path parameter"}
SHOWN_INPUT_CHARS = 40


def _shown(value: Any) -> str:
    """A scalar input as the error quotes it: repr escapes what a terminal cannot show."""
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return repr(value)
    text = repr(value)
    return text if len(text) <= SHOWN_INPUT_CHARS else text[: SHOWN_INPUT_CHARS - 4] + "...'"


def describe_validation(errors: Sequence[Any], *, with_input: bool = True) -> str:
    """FastAPI's validation errors in one line: "body field 'name': <what was wrong> (got X)"
    (without the "got": what a log may keep, since the input may be a secret)."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        kind, path = (loc[0], loc[1:]) if loc else ("body", [])
        if kind == "header" and path:
            where = f"header {path[0]!r}"
        elif path:
            where = f"{WHERE.get(kind, kind)} {'.'.join(path)!r}"
        else:
            where = "request body" if kind == "body" else kind
        message = f"{where}: {error.get('msg', 'invalid')}"
        value = error.get("input")
        shown = with_input and error.get("type") != "missing"
        if shown and isinstance(value, str | int | float | type(None)):
            message += f" (got {_shown(value)})"
        parts.append(message)
    return "; ".join(parts) or "invalid request"


async def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_validation(exc.errors())}, status_code=422)


def _document_validation_errors(app: FastAPI) -> None:
    """The OpenAPI document's 422 body as the handler above writes it (FastAPI documents
    its own list form)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas.pop("ValidationError", None)
                schemas["HTTPValidationError"] = {
                    "title": "HTTPValidationError",
                    "type": "object",
                    "properties": {
                        "detail": {
                            "type": "string",
                            "description": "Each wrong field and what was wrong, in one line.",
                        }
                    },
                    "required": ["detail"],
                }
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    _document_validation_errors(app)
    for error, status in STATUS:
        app.add_exception_handler(error, _detail(status))
    app.add_exception_handler(StateLocked, _locked)
    app.add_exception_handler(DecryptionFailed, _decryption)
    # Anything else from the domain is a bug in the mapping: say so rather than hide it.
    app.add_exception_handler(DomainError, _detail(500))
