"""The FastAPI application: ``create_app(settings)`` and the start-up sequence it runs.

Start-up (``prepare``): migrate the database, check that stored secrets are readable with
the configured key, store the bootstrap API token, apply the runners file. The CLI runs the
same sequence before starting uvicorn, to fail fast with a one-line reason, with the
migration in a child process (see ``backend.cli``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api import errors
from backend.api.deps import require_token
from backend.api.routes import audit as audit_routes
from backend.api.routes import (
    deployments,
    drift,
    health,
    notifications,
    runners,
    runs,
    state,
    tokens,
    variables,
)
from backend.api.routes import schedules as schedule_routes
from backend.api.routing import API_PREFIX
from backend.config import Settings
from backend.crypto import Cipher, check_encryption
from backend.db import Database, migrate
from backend.engine import Engine, EngineOptions
from backend.logs.hub import LogHub
from backend.models import Operation
from backend.notify.deliver import Notifier, NotifyOptions
from backend.pool import RunnerPool
from backend.scheduler import Scheduler
from backend.store import audit
from backend.store import deployments as deployment_store
from backend.store import runners as runner_store
from backend.store import tokens as token_store
from backend.web import pages

log = logging.getLogger("iac.backend")
BOOTSTRAP_TOKEN_NAME = "bootstrap (IAC_API_TOKEN)"


async def prepare(settings: Settings, *, migrate_schema: bool = True) -> tuple[Database, Cipher]:
    """Bring the database and secrets into a state the API can serve from
    (``migrate_schema=False``: the caller has migrated the database already)."""
    cipher = Cipher(settings.encryption_key.get_secret_value() if settings.encryption_key else None)
    if migrate_schema:
        await migrate(settings.database_url)
    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            await check_encryption(session, cipher)
            if settings.api_token is not None:
                await token_store.ensure_token(
                    session, BOOTSTRAP_TOKEN_NAME, settings.api_token.get_secret_value()
                )
            if settings.runners_file is not None:
                await runner_store.apply_runners_file(session, cipher, settings.runners_file)
    except BaseException:
        await database.dispose()
        raise
    return database, cipher


async def purge_deleted(database: Database, retention_days: float) -> list[str]:
    """Remove for good the deployments deleted longer ago than the retention period."""
    async with database.session() as session:
        purged = await deployment_store.purge_expired(session, retention_days)
        for name in purged:  # what the platform removes by itself is on record too
            await audit.append(
                session,
                actor="system",
                action="purge deployment",
                target=f"name={name}",
                result=f"purged: deleted more than {retention_days:g} days ago",
            )
    if purged:
        log.info("purged deleted deployments past their retention: %s", ", ".join(purged))
    return purged


async def expire_audit(database: Database, retention_days: float) -> int:
    """Remove the audit entries past IAC_AUDIT_RETENTION_DAYS (0: keep every entry)."""
    if retention_days <= 0:
        return 0
    async with database.session() as session:
        removed = await audit.apply_retention(session, retention_days)
    if removed:
        log.info("removed %d audit entries past their retention", removed)
    return removed


async def check_audit(database: Database) -> None:
    """At start: say whether the audit chain holds (and where it first does not)."""
    async with database.session() as session:
        verdict = await audit.verify(session)
    if verdict.ok:
        log.info("audit log: %d entries, the chain holds", verdict.entries)
    else:
        log.error(
            "audit log: the chain is broken at entry %s: %s (iac-backend audit verify)",
            verdict.broken_at,
            verdict.reason,
        )


async def purge_loop(database: Database, settings: Settings) -> None:
    """Purge at start, then every IAC_PURGE_INTERVAL seconds (each replica: a purge is
    idempotent), until cancelled; the audit log's retention likewise. First, the audit
    chain is checked (in the background: a long log must not delay the start)."""
    try:
        await check_audit(database)
    except Exception:
        log.exception("checking the audit log failed")
    while True:
        try:
            await purge_deleted(database, settings.deleted_retention_days)
            await expire_audit(database, settings.audit_retention_days)
        except Exception:  # the next pass retries; a purge must never stop the backend
            log.exception("purging deleted deployments or old audit entries failed")
        await asyncio.sleep(settings.purge_interval)


def engine_options(settings: Settings) -> EngineOptions:
    return EngineOptions(
        backend_id=settings.backend_id or f"{socket.gethostname()}:{settings.port}",
        max_state_bytes=settings.max_state_bytes,
        timeouts={op.value: settings.timeout_for(op.value) for op in Operation},
        runner_lost_timeout=settings.runner_lost_timeout,
        orphan_after=settings.orphan_after,
        plan_ttl=settings.plan_ttl,
    )


class HeadAsGet:
    """HEAD outside the API (the probes /healthz and /readyz, /metrics, the web pages, the
    docs) answered as its GET without the body: load balancers and uptime checks probe with
    HEAD, and FastAPI routes are GET only (405 for HEAD). The API keeps its own methods."""

    def __init__(self, app: ASGIApp, api_prefix: str = API_PREFIX) -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or scope["path"].startswith(self.api_prefix + "/")
        ):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the GET's body, not sent; its headers (Content-Length) are
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def create_app(settings: Settings | None = None, *, migrated: bool = False) -> FastAPI:
    """The application; its start-up migrates the database unless ``migrated`` says the
    caller did (``iac-backend serve`` migrates in a child process)."""
    settings = settings if settings is not None else Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database, cipher = await prepare(settings, migrate_schema=not migrated)
        app.state.db = database
        app.state.cipher = cipher
        engine = Engine(
            database,
            cipher,
            RunnerPool(database, cipher, settings.runner_poll_interval),
            LogHub(),
            engine_options(settings),
        )
        app.state.engine = engine
        await engine.start()
        purger = asyncio.create_task(purge_loop(database, settings), name="purge-deleted")
        scheduler = Scheduler(database, engine.wake, settings.schedule_interval)
        scheduling = asyncio.create_task(scheduler.run(), name="scheduler")
        notifier = Notifier(database, cipher, NotifyOptions.of(settings, engine.options.backend_id))
        app.state.notifier = notifier
        notifying = asyncio.create_task(notifier.run(), name="notify")
        if settings.api_token is None:
            log.warning("IAC_API_TOKEN is not set: no API token is bootstrapped")
        try:
            yield
        finally:
            for task in (notifying, purger, scheduling):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.stop()
            await database.dispose()

    app = FastAPI(
        title="iac-runner backend",
        version="0.1.0",
        summary="Queue, dispatch and watch Terraform/OpenTofu runs on a remote runner pool.",
        lifespan=lifespan,
        # /docs is served by the web UI from a local copy of Swagger UI (no CDN); ReDoc,
        # which only a CDN would serve, is not.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(HeadAsGet)
    errors.install(app)

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token)])
    api.include_router(runners.router)
    api.include_router(deployments.router)
    api.include_router(variables.router)
    api.include_router(runs.router)
    api.include_router(state.api_router)
    api.include_router(tokens.router)
    api.include_router(tokens.me_router)
    api.include_router(audit_routes.router)
    api.include_router(drift.router)
    api.include_router(schedule_routes.router)
    api.include_router(schedule_routes.all_router)
    api.include_router(notifications.router)
    # Every API route says which role it needs (backend.api.deps.needs): one without is a
    # bug that would leave it open to every token, so the app refuses to start.
    undeclared = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in api.routes
        if isinstance(route, APIRoute) and "x-iac-role" not in (route.openapi_extra or {})
    ]
    if undeclared:
        raise RuntimeError(f"API routes without a declared role: {', '.join(undeclared)}")
    app.include_router(api)
    app.include_router(health.router)
    pages.install(app)  # the web UI: HTML pages and /static
    return app
