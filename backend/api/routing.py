"""How the API reads a request before a route sees it: ``CheckedRoute`` parses a JSON body
with the backend's own rules and refuses text parameters no database can store.

Python's JSON parser accepts NaN, Infinity and lone surrogates (``"\\ud800"``), none of
which the rest of the stack survives: pydantic's error echoes the value and the JSON
encoder of the answer fails on it, PostgreSQL refuses NUL and surrogates in text, the
cipher cannot encode a surrogate. Each of those was a 500. Every router is made with
``route_class=CheckedRoute``, so the check is in this one place for every route, and the
refusal is a 422 naming the field.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from backend.errors import Invalid
from backend.store.validation import parse_json, text_problem

API_PREFIX = "/api/v1"


def _is_json(request: Request) -> bool:
    """Whether FastAPI would parse this body as JSON (no content type, or a JSON one)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def check_parameters(request: Request) -> None:
    """Path and query values are text: refuse what cannot be stored or compared as text."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            raise Invalid(f"path parameter {name!r} {problem}")
    for name, value in request.query_params.multi_items():
        if (problem := text_problem(name) or text_problem(value)) is not None:
            raise Invalid(f"query parameter {name!r} {problem}")


class CheckedRoute(APIRoute):
    """An API route whose JSON body and text parameters are checked first (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        has_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            check_parameters(request)
            if has_body and _is_json(request):
                body = await request.body()
                if body:
                    # Parsed again by FastAPI (the body is cached); a request body is small.
                    parse_json(body)
            return await handler(request)

        return checked
