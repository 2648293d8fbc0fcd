"""What lives outside the API: every GET route answers HEAD (probes, pages, docs, assets),
and /docs is Swagger UI from the backend itself, with nothing fetched from elsewhere."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from backend.api.routes import health
from backend.api.routing import API_PREFIX
from backend.web import pages

pytestmark = pytest.mark.anyio


def get_paths_outside_the_api(app: FastAPI) -> list[str]:
    """A concrete path for every GET route and static mount that is not under /api/v1: the
    probes' router, the web UI's, and what the app itself holds (/openapi.json, mounts)."""
    routes = [*health.router.routes, *pages.router.routes, *app.routes]
    paths = []
    for route in routes:
        if isinstance(route, Route | APIRoute) and "GET" in (route.methods or ()):
            paths.append(re.sub(r"\{[^}]+\}", "1", route.path))
        elif isinstance(route, Mount):
            files = {"/static": "/app.js", "/docs/assets": "/swagger-ui-bundle.js"}
            paths.append(route.path + files[route.path])
    return paths


async def test_every_get_route_outside_the_api_answers_head(app: FastAPI, live_url: str) -> None:
    paths = get_paths_outside_the_api(app)
    assert {"/healthz", "/readyz", "/metrics", "/", "/runs/1", "/runners", "/login"} <= set(paths)
    assert {"/docs", "/openapi.json", "/static/app.js", "/docs/assets/swagger-ui-bundle.js"} <= set(
        paths
    )
    async with httpx.AsyncClient(base_url=live_url) as http:
        # Nothing else outside the API is in its document.
        spec = (await http.get("/openapi.json")).json()
        assert {p for p in spec["paths"] if not p.startswith(API_PREFIX)} <= set(paths)
        for path in paths:
            get = await http.get(path)
            head = await http.head(path)
            assert get.status_code == 200, (path, get.status_code)
            assert head.status_code == 200, (path, head.status_code, head.text)
            assert head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
            if "content-length" in get.headers and path != "/metrics":  # metrics move
                assert head.headers["content-length"] == get.headers["content-length"], path
        # The API keeps its own methods.
        assert (await http.head(API_PREFIX + "/runs")).status_code in (401, 405)


async def test_docs_load_only_from_the_backend(anon: httpx.AsyncClient) -> None:
    page = await anon.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # every script is a file
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 3, page.text
    for url in urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/") and not url.startswith("//"), url  # same origin
        asset = await anon.get(url)
        assert asset.status_code == 200, url
        if url.startswith("/static/docs.js"):
            assert '"/openapi.json"' in asset.text
    spec = await anon.get("/openapi.json")
    assert spec.status_code == 200 and "/api/v1/runs" in spec.json()["paths"]
    assert (await anon.get("/redoc")).status_code == 404  # it would need a CDN
