"""Terraform's http-backend requests, as runners relay them, answered from the database.

A runner relays each request terraform makes to its loopback state endpoint as a
`StateCall` on the ServeState stream this backend opened to it (see runner_server's
state_relay and `backend.state_channels`). The call names the runner-side run of the
step whose terraform asks; this module checks that the run is executing, here, on that
runner, and answers with what Terraform's http backend expects: the state (200) or none
(204), 423 with the holder's lock info, 409, ... A call for a run another backend has
adopted gets 421, which tells the runner to hold it for the run's new owner.

No credential of terraform's ever reaches the backend: the runner checks terraform's
per-run password, the backend authenticates the runner (the stream is its own call).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher
from backend.db import Database, database_lost
from backend.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    StateLocked,
    TooLarge,
)
from backend.models import STATE_ACCESS_STATUSES, Deployment, Run
from backend.store import state
from backend.store.runs import add_event
from protos.iacrunner.v1 import runner_pb2 as pb

log = logging.getLogger("iac.backend.state")

# The runner holds terraform's request meanwhile, so a database outage of a few minutes
# costs an apply nothing.
DATABASE_PATIENCE = 240.0
MISDIRECTED = 421
STATUS: list[tuple[type[DomainError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (Invalid, 400),
    (Forbidden, 403),
]


@dataclass(frozen=True)
class Caller:
    """The run whose terraform made a call, as the database knows it."""

    run_id: int
    deployment: Deployment


def answer(status: int, body: bytes | dict[str, object] = b"") -> pb.StateResponse:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return pb.StateResponse(status=status, body=data, content_type="application/json")


class StateService:
    """Answers the state calls runners relay to this backend."""

    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        backend_id: str,
        max_state_bytes: int,
        runner_run_id_owner: Callable[[str], int | None],
        *,
        patience: float = DATABASE_PATIENCE,
    ) -> None:
        self.db = db
        self.patience = patience
        self.cipher = cipher
        self.backend_id = backend_id
        self.max_state_bytes = max_state_bytes
        # Which of this database's runs a runner-side run id names (None: not ours).
        self.owner_of = runner_run_id_owner

    async def handle(self, runner: str, call: pb.StateCall) -> pb.StateResponse:
        """The answer to one call; a lost database is waited for, then 503."""
        deadline = time.monotonic() + self.patience
        delay = 0.5
        while True:
            try:
                return await self._handle(runner, call)
            except Exception as exc:
                if not database_lost(exc):
                    log.exception("state call %s %s failed", call.method, call.run_id)
                    return answer(500, {"detail": "internal error of the backend"})
                if time.monotonic() > deadline:
                    return answer(
                        503,
                        {"detail": "the backend's database is unavailable: terraform retries"},
                    )
                log.warning("state call waits for the database: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _handle(self, runner: str, call: pb.StateCall) -> pb.StateResponse:
        if len(call.body) > self.max_state_bytes:
            return answer(413, {"detail": f"state is larger than {self.max_state_bytes} bytes"})
        if call.method == "RECOVER":
            return await self._recover(runner, call)
        operation = OPERATIONS.get(call.method)
        if operation is None:
            return answer(405, {"detail": f"method {call.method!r} is not a state operation"})
        try:
            async with self.db.session() as session:
                caller = await self._caller(session, runner, call.run_id)
                if isinstance(caller, pb.StateResponse):
                    return caller
                return await operation(self, session, caller, call)
        except StateLocked as exc:
            return answer(423, exc.holder)
        except DomainError as exc:
            status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
            return answer(status, {"detail": str(exc)})

    async def _caller(
        self, session: AsyncSession, runner: str, runner_run_id: str
    ) -> Caller | pb.StateResponse:
        row = (
            await session.execute(
                select(Run.id, Run.deployment_id, Run.status, Run.claimed_by, Run.runner_id)
                .where(Run.runner_run_id == runner_run_id)
                .limit(1)
            )
        ).first()
        if row is None or row.runner_id != runner:
            return answer(403, {"detail": f"{runner_run_id} is no executing run on {runner}"})
        if row.status not in STATE_ACCESS_STATUSES:
            return answer(403, {"detail": f"run {row.id} is {row.status}: its state is closed"})
        if row.claimed_by != self.backend_id:
            # Adopted by another backend, which is about to attach: the runner holds the
            # call for it.
            return answer(MISDIRECTED, {"detail": f"run {row.id} is executed by another backend"})
        deployment = (
            await session.execute(
                select(Deployment.name, Deployment.deleted_at).where(
                    Deployment.id == row.deployment_id
                )
            )
        ).one()
        if deployment.deleted_at is not None:
            return answer(403, {"detail": f"deployment {deployment.name!r} is deleted"})
        return Caller(row.id, Deployment(id=row.deployment_id, name=deployment.name))

    async def _get(
        self, session: AsyncSession, caller: Caller, call: pb.StateCall
    ) -> pb.StateResponse:
        current = await state.current_state(session, caller.deployment.id)
        if current is None:
            return answer(204)  # terraform reads it as "no state yet"
        return answer(200, self.cipher.unseal(current.data))

    async def _post(
        self, session: AsyncSession, caller: Caller, call: pb.StateCall
    ) -> pb.StateResponse:
        parsed = state.parse_state(call.body, call.content_md5 or None)
        await state.write_state(
            session,
            caller.deployment,
            call.body,
            lock_id=call.lock_id or None,
            run_id=caller.run_id,
            parsed=parsed,
            cipher=self.cipher,
        )
        return answer(200)

    async def _delete(
        self, session: AsyncSession, caller: Caller, call: pb.StateCall
    ) -> pb.StateResponse:
        await state.delete_state(
            session, caller.deployment, lock_id=call.lock_id or None, run_id=caller.run_id
        )
        return answer(200)

    async def _lock(
        self, session: AsyncSession, caller: Caller, call: pb.StateCall
    ) -> pb.StateResponse:
        info = state.parse_lock_info(call.body)
        await state.lock_state(session, caller.deployment, info, caller.run_id)
        return answer(200, info)

    async def _unlock(
        self, session: AsyncSession, caller: Caller, call: pb.StateCall
    ) -> pb.StateResponse:
        lock_id = state.parse_lock_info(call.body)["ID"] if call.body.strip() else None
        await state.unlock_state(session, caller.deployment, lock_id, caller.run_id)
        return answer(200)

    async def _recover(self, runner: str, call: pb.StateCall) -> pb.StateResponse:
        """State terraform could not save, kept as a state version of the run's deployment."""
        run_id = self.owner_of(call.run_id)
        if run_id is None:
            return answer(404, {"detail": f"{call.run_id} is not a run of this backend's database"})
        try:
            async with self.db.session() as session:
                row = (
                    await session.execute(
                        select(Run.deployment_id, Run.runner_id, Run.started_at).where(
                            Run.id == run_id
                        )
                    )
                ).first()
                if row is None or row.runner_id != runner:
                    return answer(403, {"detail": f"run {run_id} did not run on {runner}"})
                name = await session.scalar(
                    select(Deployment.name).where(Deployment.id == row.deployment_id)
                )
                assert name is not None
                deployment = Deployment(id=row.deployment_id, name=name)
                version = await state.recover_state(
                    session,
                    deployment,
                    call.body,
                    run_id=run_id,
                    run_started_at=row.started_at,
                    cipher=self.cipher,
                )
                await add_event(
                    session,
                    run_id,
                    "state_recovered",
                    f"state terraform could not save (serial {version.serial}) recovered from "
                    f"runner {runner} into state version {version.id}",
                )
        except DomainError as exc:
            status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
            return answer(status, {"detail": str(exc)})
        text = f"it was recovered into state version {version.id} (serial {version.serial})"
        return answer(200, text.encode())


Operation = Callable[
    [StateService, AsyncSession, Caller, pb.StateCall], Awaitable[pb.StateResponse]
]
OPERATIONS: dict[str, Operation] = {
    "GET": StateService._get,
    "POST": StateService._post,
    "DELETE": StateService._delete,
    "LOCK": StateService._lock,
    "UNLOCK": StateService._unlock,
}
