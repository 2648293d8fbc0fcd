"""Run endpoints: start, list, show, its plan, approve, discard, cancel, and the log (text
or live SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from backend import metrics
from backend.access import Role
from backend.api.deps import (
    CipherDep,
    DatabaseDep,
    RunIdDep,
    SessionDep,
    TokenDep,
    needs,
    role_of,
    scope_of,
)
from backend.api.routing import CheckedRoute
from backend.db import Database
from backend.engine import Engine
from backend.errors import Forbidden, Invalid, NotFound
from backend.logs.follow import KeepAlive, StatusChange, follow
from backend.models import ApprovePolicy, Run, RunStatus
from backend.schemas.runs import Decision, PlanOut, RunCreate, RunEventOut, RunOut
from backend.store import deployments, runlist
from backend.store import logs as log_store
from backend.store import runs as run_store
from backend.store.validation import MAX_ID

router = APIRouter(prefix="/runs", tags=["runs"], route_class=CheckedRoute)


def run_out(
    run: Run, deployment: str, config_version: int, times: runlist.RunTimes | None = None
) -> RunOut:
    times = times or runlist.RunTimes()
    return RunOut(
        running_seconds=times.running,
        waiting_seconds=times.waiting,
        id=run.id,
        deployment=deployment,
        operation=run.operation,
        status=run.status,
        priority=run.priority,
        auto_approve=run.approve_policy,
        created_by=run.created_by,
        config_version=config_version,
        runner_id=run.runner_id,
        tool_version=run.tool_version,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        exit_code=run.exit_code,
        error_msg=run.error_msg,
        wait_reason=run.wait_reason,
        has_changes=run.has_changes,
        changes=run.changes,
        plan_sha256=run.plan_sha256,
        planned_at=run.planned_at,
        last_seq=run.last_seq,
        cancel_requested=run.cancel_requested,
    )


async def one_run_out(session: AsyncSession, run_id: int) -> RunOut:
    row = await runlist.run_row(session, run_id)
    times = await runlist.times_of(session, [row[0]])
    return run_out(*row, times[run_id])


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.post("", status_code=status.HTTP_201_CREATED, **needs(Role.PLANNER))
async def create_run(
    body: RunCreate, session: SessionDep, request: Request, token: TokenDep
) -> RunOut:
    # FOR SHARE (PostgreSQL): a delete of the deployment waits for this run to be queued
    # (and then refuses: the run is active), or this request sees the deployment deleted.
    # Runs of a deleted deployment are never queued, so never dispatched.
    deployment = await deployments.get_deployment(
        session, body.deployment, for_share=True, scope=scope_of(token)
    )
    if body.operation not in ("plan", "drift") and not role_of(token).includes(Role.OPERATOR):
        raise Forbidden(
            f"a {body.operation} run needs the operator role; token {token.name!r} is a "
            f"{role_of(token)}: it may start plan runs and drift checks"
        )
    run = await run_store.create_run(
        session,
        deployment,
        body.operation,
        priority=body.priority,
        approve_policy=policy_of(body.auto_approve),
        config_version=body.config_version,
        actor=token.name,
        actor_id=token.id,
        comment=body.comment,
    )
    out = await one_run_out(session, run.id)  # in the same transaction
    await session.commit()
    engine_of(request).wake()
    return out


@router.get("", **needs(Role.VIEWER))
async def list_runs(
    session: SessionDep,
    token: TokenDep,
    deployment: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunOut]:
    rows = await runlist.list_runs(
        session, deployment=deployment, status=status, limit=limit, scope=scope_of(token)
    )
    times = await runlist.times_of(session, [row[0] for row in rows])
    return [run_out(*row, times[row[0].id]) for row in rows]


@router.get("/{run_id}", **needs(Role.VIEWER))
async def get_run(run_id: RunIdDep, session: SessionDep) -> RunOut:
    run, deployment, version = await runlist.run_row(session, run_id)
    events = await run_store.list_events(session, run_id)
    times = runlist.run_times(
        run.created_at, ((e.at, e.kind) for e in events), runlist.counted_until(run)
    )
    out = run_out(run, deployment, version, times)
    out.events = [RunEventOut.model_validate(e) for e in events]
    return out


@router.post("/{run_id}/approve", **needs(Role.OPERATOR))
async def approve_run(
    run_id: RunIdDep,
    session: SessionDep,
    request: Request,
    token: TokenDep,
    body: Decision | None = None,
) -> RunOut:
    """Apply the plan, unless it is stale (409 says why and how to re-plan)."""
    await engine_of(request).approve(run_id, token.name, body.comment if body else "", token.id)
    return await one_run_out(session, run_id)


@router.post("/{run_id}/discard", **needs(Role.OPERATOR))
async def discard_run(
    run_id: RunIdDep,
    session: SessionDep,
    request: Request,
    token: TokenDep,
    body: Decision | None = None,
) -> RunOut:
    """End a plan awaiting approval without applying it; the deployment's queue moves on."""
    await engine_of(request).discard(run_id, token.name, body.comment if body else "")
    return await one_run_out(session, run_id)


@router.post("/{run_id}/cancel", **needs(Role.OPERATOR))
async def cancel_run(
    run_id: RunIdDep,
    session: SessionDep,
    request: Request,
    token: TokenDep,
    force: bool = False,
    body: Decision | None = None,
) -> RunOut:
    await engine_of(request).cancel(
        run_id, force=force, actor=token.name, comment=body.comment if body else ""
    )
    session.expire_all()
    return await one_run_out(session, run_id)


@router.get("/{run_id}/plan", **needs(Role.VIEWER))
async def run_plan(run_id: RunIdDep, session: SessionDep, cipher: CipherDep) -> PlanOut:
    """The plan as a reviewer reads it: counts, resource changes (replacements and
    deletions first) with their changed attributes, output changes, drift. Every value
    terraform marks sensitive, or that holds a sensitive variable's value, is redacted."""
    run = await run_store.get_run(session, run_id)
    if run.plan_summary is None:
        raise NotFound(
            f"run {run_id} has no plan summary"
            + ("" if run.planned_at else f" (it is {run.status}: its plan has not ended)")
        )
    return PlanOut.model_validate_json(cipher.unseal(run.plan_summary))


def policy_of(value: str | bool | None) -> str | None:
    if isinstance(value, bool):
        return ApprovePolicy.ALWAYS.value if value else ApprovePolicy.NEVER.value
    return value


def _resume_from(last_event_id: str | None, after: int) -> int:
    if last_event_id is None:
        return after
    if not last_event_id.strip().isdigit() or not last_event_id.isascii():
        raise Invalid(f"Last-Event-ID {last_event_id!r} must be the seq of the last line received")
    if int(last_event_id) > MAX_ID:
        raise Invalid(f"Last-Event-ID {last_event_id!r} is larger than any seq")
    return int(last_event_id)


def plain_log(database: Database, run_id: int, after: int, upto: int) -> AsyncIterator[str]:
    """Lines `after`+1 .. `upto` as text, a page of chunks at a time, each page read in a
    short transaction of its own (on SQLite the one connection is never held while the
    client reads), each chunk sent as it is read: memory stays flat however long the log."""

    async def pages() -> AsyncIterator[str]:
        position = after
        while position < upto:
            async with database.session() as session:
                chunks = await log_store.chunk_page(session, run_id, position, upto)
            if not chunks:
                return
            for chunk in chunks:
                text, position = log_store.page_text(chunk, position, upto)
                if text:
                    yield text

    return pages()


@router.get(
    "/{run_id}/logs",
    response_model=None,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
    **needs(Role.VIEWER),
)
async def run_logs(
    run_id: RunIdDep,
    database: DatabaseDep,
    request: Request,
    follow_: Annotated[bool, Query(alias="follow", description="Server-Sent Events, live")] = False,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Only lines after this seq")] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The stored log as text, streamed from the store (`X-Last-Seq`: the last line in it,
    the last stored when the request came); with `follow=true` an SSE stream: one
    `id: <last seq>` event per batch (data: {"seq": first seq, "lines": [...]}), `status`
    events when the run's status changes, and an `end` event. Reconnect with
    `Last-Event-ID` to resume."""
    async with database.session() as session:
        last = await log_store.last_stored_seq(session, run_id)  # 404 for an unknown run
    if not follow_:
        return StreamingResponse(
            plain_log(database, run_id, after, last),
            media_type="text/plain; charset=utf-8",
            headers={"X-Last-Seq": str(max(last, after))},
        )
    start = _resume_from(last_event_id, after)
    engine = engine_of(request)

    async def events() -> AsyncIterator[str]:
        metrics.ACTIVE_STREAMS.inc()
        try:
            async for item in follow(engine.db, engine.hub, run_id, start):
                if isinstance(item, KeepAlive):
                    yield ": keep-alive\n\n"
                elif isinstance(item, StatusChange):
                    yield f"event: status\ndata: {json.dumps({'status': item.status})}\n\n"
                else:
                    data = json.dumps({"seq": item.first_seq, "text": item.text})
                    yield f"id: {item.last_seq}\ndata: {data}\n\n"
            yield "event: end\ndata: {}\n\n"
        finally:
            metrics.ACTIVE_STREAMS.dec()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
