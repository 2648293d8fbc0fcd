"""The web UI's pages: runs overview, run page (live log), runners, schedules, drift,
notifications, audit log, login, and the API docs (Swagger UI served from the
swagger-ui-bundle-v2 package's files: no CDN).

Each page is a server-rendered shell with no data in it, so it is served without a token;
its script calls the API with ``Authorization: Bearer`` and sends the user to ``/login``
when the token is missing or refused. A strict Content-Security-Policy allows scripts
from this origin only, which keeps the token in ``sessionStorage`` out of reach of any
markup that might slip into a log line.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
# Swagger UI's distribution files, as the swagger-ui-bundle-v2 package installs them.
SWAGGER_UI_DIR = Path(str(swagger_ui_path))

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

# Messages for /login?reason=...: the reason is a fixed word, never text from the URL.
LOGIN_REASONS = {
    "missing": "Sign in with an API token to continue.",
    "invalid": "The API token was refused (invalid, expired or revoked). Paste a valid token.",
    "signed_out": "You are signed out.",
}


def _static_version() -> str:
    """A digest of the static files, appended to their URLs so a new release is never
    served from a stale browser cache."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def templates() -> Jinja2Templates:
    """The page templates, loaded with Jinja2 on the first page served: a backend used only
    through the API never imports it."""
    from fastapi.templating import Jinja2Templates

    loaded = Jinja2Templates(directory=TEMPLATES_DIR)
    loaded.env.globals["static_version"] = _static_version()
    loaded.env.globals["swagger_ui_version"] = SWAGGER_UI_DIR.name.rsplit("-", 1)[-1]
    return loaded


router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates().TemplateResponse(request, template, context, headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
async def runs_page(request: Request) -> HTMLResponse:
    return _page(request, "runs.html", page="runs")


@router.get("/runs/{run_id:int}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: int) -> HTMLResponse:
    return _page(request, "run.html", page="run", run_id=run_id)


@router.get("/runners", response_class=HTMLResponse)
async def runners_page(request: Request) -> HTMLResponse:
    return _page(request, "runners.html", page="runners")


@router.get("/drift", response_class=HTMLResponse)
async def drift_page(request: Request) -> HTMLResponse:
    return _page(request, "drift.html", page="drift")


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(request: Request) -> HTMLResponse:
    return _page(request, "schedules.html", page="schedules")


@router.get("/notifications", response_class=HTMLResponse)
async def notifications_page(request: Request) -> HTMLResponse:
    return _page(request, "notifications.html", page="notifications")


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request) -> HTMLResponse:
    return _page(request, "audit.html", page="audit")


@router.get("/docs", response_class=HTMLResponse)
async def docs_page(request: Request) -> HTMLResponse:
    return _page(request, "docs.html", page="docs")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, reason: str | None = None) -> HTMLResponse:
    return _page(request, "login.html", page="login", message=LOGIN_REASONS.get(reason or ""))


def install(app: FastAPI) -> None:
    """Serve the pages and their static files from ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="docs-assets")
