"""Liveness, readiness and Prometheus metrics; none of them needs a token."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

import backend.metrics  # noqa: F401 - registers the backend's series, served below

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The database answers; 503 with the reason when it does not."""
    try:
        await request.app.state.db.ping()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the caller
        return JSONResponse(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}: {exc}"},
            status_code=503,
        )
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
