"""The backend's REST API over httpx, with every failure turned into one ``CliError`` line.

A 4xx answer becomes exit code 2 with the API's own ``detail`` (the backend words it as
what to fix); a 5xx, an unreachable backend or a timeout becomes exit code 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote

import httpx

from iac_cli.config import Config
from iac_cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError

API_PREFIX = "/api/v1"
TIMEOUT = 30.0


def _user_agent() -> str:
    try:
        return f"iac-cli/{version('iac-runner')}"
    except PackageNotFoundError:
        return "iac-cli"


class Unreachable(CliError):
    """No HTTP answer at all: connection refused, DNS, TLS, timeout, dropped connection."""


class ServerError(CliError):
    """A 5xx answer: the backend (or a proxy in front of it) failed, maybe for a moment."""


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe_transport_error(url: str, exc: httpx.TransportError) -> str:
    reason = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"the backend at {url} did not answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot reach the backend at {url}: {reason} (check --url or IAC_URL)"
    return f"lost the connection to the backend at {url}: {reason}"


def _validation_detail(items: list[Any]) -> str:
    """FastAPI's 422 body: [{"loc": ["body", "labels"], "msg": "..."}, ...] in one line."""
    parts = []
    for item in items:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            msg = str(item.get("msg", item))
            parts.append(f"{loc}: {msg}" if loc else msg)
        else:
            parts.append(str(item))
    return "; ".join(parts) or "invalid request"


def api_error(response: httpx.Response, config: Config) -> CliError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    detail: str
    if isinstance(body, dict) and "detail" in body:
        raw = body["detail"]
        detail = _validation_detail(raw) if isinstance(raw, list) else str(raw)
    elif response.text.strip():
        detail = response.text.strip()[:200]
    else:
        detail = response.reason_phrase or "error"
    if status == 401 and config.token is None:
        detail = (
            f'no API token: pass --token, set IAC_TOKEN, or put token = "..." in '
            f"{config.config_path} (the backend said: {detail})"
        )
    elif detail in ("Not Found", "Method Not Allowed"):
        # Not the backend's words: the URL probably points at something else.
        request = response.request
        detail = f"{detail}: {request.method} {request.url} (is {config.url} an iac backend?)"
    message = f"{one_line(detail)} (HTTP {status})"
    if status >= 500:
        return ServerError(message, EXIT_FAILURE)
    return CliError(message, EXIT_USAGE if status >= 400 else EXIT_FAILURE)


class Api:
    """One connection pool to the backend; methods return the decoded JSON body."""

    def __init__(self, config: Config, *, timeout: float = TIMEOUT) -> None:
        self.config = config
        headers = {"User-Agent": _user_agent()}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.Client(base_url=config.url + API_PREFIX, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def unreachable(self, exc: httpx.TransportError) -> Unreachable:
        return Unreachable(describe_transport_error(self.config.url, exc))

    def check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            response.read()
            raise api_error(response, self.config)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        self.check(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError:
            raise CliError(
                f"the backend at {self.config.url} answered {method} {path} with something "
                "that is not JSON (is it an iac backend?)"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.json("GET", path, params=clean)

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """An open streaming response (2xx checked); transport errors pass through as httpx's,
        so a caller that resumes can tell a dropped connection from an API refusal."""
        with self.http.stream("GET", path, **kwargs) as response:
            self.check(response)
            yield response

    # -- the resources ------------------------------------------------------------------
    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.get(f"/runs/{run_id}"))


def seg(value: str | int) -> str:
    """One URL path segment: a name with '/' or '?' in it cannot reach another route."""
    return quote(str(value), safe="")
