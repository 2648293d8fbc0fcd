"""Terraform state: versions and locks, behind terraform's ``http`` backend.

Every write is a new ``state_versions`` row; a DELETE writes an empty marker version, so the
history survives. The lock is one ``state_locks`` row per deployment: its primary key makes
taking it atomic on every database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from backend.crypto import Cipher
from backend.errors import Conflict, Invalid, NotFound, StateLocked
from backend.models import Deployment, Run, StateLock, StateVersion
from backend.store.runs import SYSTEM, add_event
from backend.store.validation import check_text, parse_json

MAX_LOCK_ID_CHARS = 255
# The md5 of the empty marker version a DELETE leaves (no real state is empty).
EMPTY_MD5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()


async def get_lock(session: AsyncSession, deployment_id: int) -> StateLock | None:
    return await session.get(StateLock, deployment_id)


def _holder(lock: StateLock) -> dict[str, Any]:
    return dict(lock.info) if lock.info else {"ID": lock.lock_id}


def parse_lock_info(body: bytes) -> dict[str, Any]:
    """Terraform's lock info JSON ({"ID": ..., "Operation": ..., "Who": ...})."""
    # Stored as it is (a JSON column, the id as text): the backend's own JSON rules apply.
    try:
        info = parse_json(body, "lock info")
    except Invalid as exc:
        raise Invalid(f"{exc} (lock info must be a JSON object with an 'ID')") from None
    if not isinstance(info, dict):
        raise Invalid("lock info must be a JSON object with an 'ID'")
    lock_id = info.get("ID")
    if not isinstance(lock_id, str) or not lock_id or len(lock_id) > MAX_LOCK_ID_CHARS:
        raise Invalid(f"lock info needs an 'ID' string of 1 to {MAX_LOCK_ID_CHARS} characters")
    return info


async def lock_state(
    session: AsyncSession, deployment: Deployment, info: dict[str, Any], run_id: int | None
) -> StateLock:
    """Take the deployment's state lock; StateLocked with the holder's info if taken."""
    lock_id = info["ID"]
    existing = await get_lock(session, deployment.id)
    if existing is not None:
        if existing.lock_id == lock_id and existing.run_id == run_id:
            return existing  # the same client retrying its own lock
        raise StateLocked(f"state of {deployment.name!r} is locked", _holder(existing))
    lock = StateLock(deployment_id=deployment.id, lock_id=lock_id, info=info, run_id=run_id)
    try:
        # Added inside the savepoint: begin_nested() flushes pending objects first, and a
        # failed insert outside it would doom the whole transaction.
        async with session.begin_nested():
            session.add(lock)
            await session.flush()
    except IntegrityError:
        # Another request took the lock first (the savepoint rollback dropped our row).
        holder = await get_lock(session, deployment.id)
        raise StateLocked(
            f"state of {deployment.name!r} is locked",
            _holder(holder) if holder is not None else {},
        ) from None
    if run_id is not None:
        await add_event(
            session, run_id, "state_locked", f"lock {lock_id} ({info.get('Operation', '?')})"
        )
    return lock


async def unlock_state(
    session: AsyncSession, deployment: Deployment, lock_id: str | None, run_id: int | None
) -> None:
    """Release the lock ``lock_id``. Without an id (terraform force-unlock sends no body),
    only the run holding the lock may release it. Unlocking an unlocked state is a no-op."""
    lock = await get_lock(session, deployment.id)
    if lock is None:
        return
    if lock_id is None:
        if run_id is None or lock.run_id != run_id:
            raise Conflict(f"state of {deployment.name!r} is locked by lock {lock.lock_id}")
    elif lock.lock_id != lock_id:
        raise Conflict(
            f"lock id mismatch: state of {deployment.name!r} is locked by {lock.lock_id}, "
            f"not {lock_id}"
        )
    await session.delete(lock)
    await session.flush()
    if run_id is not None:
        await add_event(session, run_id, "state_unlocked", f"lock {lock.lock_id}")


async def _check_writer(session: AsyncSession, deployment: Deployment, lock_id: str | None) -> None:
    lock = await get_lock(session, deployment.id)
    if lock is None:
        if lock_id:
            # The writer believes it holds a lock that is gone (released after a forced
            # kill, say): its state may be stale, so refuse rather than overwrite.
            raise Conflict(f"lock {lock_id} is not held on the state of {deployment.name!r}")
        return
    if lock_id is None:
        raise StateLocked(f"state of {deployment.name!r} is locked", _holder(lock))
    if lock.lock_id != lock_id:
        raise Conflict(
            f"lock id mismatch: state of {deployment.name!r} is locked by {lock.lock_id}, "
            f"not {lock_id}"
        )


def parse_state(data: bytes, content_md5: str | None) -> tuple[int, str, str]:
    """Check a state document; returns (serial, lineage, md5 hex)."""
    digest = hashlib.md5(data, usedforsecurity=False)
    if content_md5:
        try:
            sent = base64.b64decode(content_md5, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid("Content-MD5 header is not base64") from None
        if sent != digest.digest():
            raise Invalid("Content-MD5 does not match the body: the state was damaged in transit")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("state must be a JSON document") from None
    if not isinstance(doc, dict):
        raise Invalid("state must be a JSON object")
    serial, lineage = doc.get("serial"), doc.get("lineage")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise Invalid("state needs a non-negative integer 'serial'")
    if not isinstance(lineage, str) or not lineage or len(lineage) > 64:
        raise Invalid("state needs a 'lineage' string of 1 to 64 characters")
    check_text(lineage, "the state's 'lineage'")
    return serial, lineage, digest.hexdigest()


async def current_state(session: AsyncSession, deployment_id: int) -> StateVersion | None:
    """The latest state version, or None when there is none or it was deleted."""
    row = await session.scalar(
        select(StateVersion)
        .where(StateVersion.deployment_id == deployment_id)
        .order_by(StateVersion.id.desc())
        .limit(1)
    )
    if row is None or not row.data:
        return None
    return row


async def write_state(
    session: AsyncSession,
    deployment: Deployment,
    data: bytes,
    *,
    lock_id: str | None,
    run_id: int | None,
    content_md5: str | None = None,
    parsed: tuple[int, str, str] | None = None,
    cipher: Cipher | None = None,
) -> StateVersion:
    """Store a new state version, honouring the lock (StateLocked / Conflict); encrypted
    with `cipher` when it has a key (`unseal` reads it back). A write identical to the
    latest version (serial, lineage and md5: terraform writes the same state again, e.g.
    when a canceled apply persists what it has) is not a new version: the latest is
    returned and nothing is stored."""
    serial, lineage, md5 = parsed or parse_state(data, content_md5)
    await _check_writer(session, deployment, lock_id)
    latest = await current_state(session, deployment.id)
    if latest is not None and (latest.serial, latest.lineage, latest.md5) == (serial, lineage, md5):
        return latest
    if latest is not None and latest.lineage == lineage and serial < latest.serial:
        raise Conflict(
            f"state serial {serial} is older than the stored serial {latest.serial}: "
            "refusing to overwrite newer state"
        )
    row = StateVersion(
        deployment_id=deployment.id,
        serial=serial,
        lineage=lineage,
        data=cipher.seal(data) if cipher is not None else data,
        md5=md5,
        run_id=run_id,
    )
    session.add(row)
    await session.flush()
    if run_id is not None:
        await add_event(session, run_id, "state_written", f"state serial {serial}")
    return row


async def recover_state(
    session: AsyncSession,
    deployment: Deployment,
    data: bytes,
    *,
    run_id: int,
    run_started_at: datetime | None,
    cipher: Cipher | None = None,
) -> StateVersion:
    """Keep state terraform could not save (its errored.tfstate) as a state version marked
    recovered. Refused (Conflict) when another run wrote the state since this run started
    (the recovered state would silently undo that write) or when it is older than the
    stored one. Whatever lock is held stays held (the run's end releases its own)."""
    serial, lineage, md5 = parse_state(data, None)
    latest = await current_state(session, deployment.id)
    if latest is not None and latest.md5 == md5:
        return latest  # already stored (a runner asking again)
    newer = await session.scalar(
        select(StateVersion.id)
        .where(
            StateVersion.deployment_id == deployment.id,
            StateVersion.run_id.is_distinct_from(run_id),
            StateVersion.created_at > (run_started_at or datetime.min.replace(tzinfo=UTC)),
        )
        .limit(1)
    )
    if newer is not None:
        raise Conflict(
            f"state version {newer} was written by another run after run {run_id} started: "
            "its unsaved state would undo that"
        )
    if latest is not None and latest.lineage == lineage and serial < latest.serial:
        raise Conflict(
            f"recovered state serial {serial} is older than the stored serial {latest.serial}"
        )
    row = StateVersion(
        deployment_id=deployment.id,
        serial=serial,
        lineage=lineage,
        data=cipher.seal(data) if cipher is not None else data,
        md5=md5,
        run_id=run_id,
        recovered=True,
    )
    session.add(row)
    await session.flush()
    return row


async def delete_state(
    session: AsyncSession, deployment: Deployment, *, lock_id: str | None, run_id: int | None
) -> None:
    """Mark the state deleted with an empty version, keeping the history."""
    await _check_writer(session, deployment, lock_id)
    latest = await current_state(session, deployment.id)
    if latest is None:
        return
    session.add(
        StateVersion(
            deployment_id=deployment.id,
            serial=latest.serial,
            lineage=latest.lineage,
            data=b"",
            md5=EMPTY_MD5,
            run_id=run_id,
        )
    )
    await session.flush()
    if run_id is not None:
        await add_event(session, run_id, "state_deleted", "")


async def release_lock(
    session: AsyncSession,
    deployment_id: int,
    reason: str,
    run_id: int | None = None,
    *,
    actor: str = SYSTEM,
    comment: str = "",
) -> StateLock | None:
    """Force-release the deployment's state lock (after a forced kill or a lost runner) and
    record why in the history of ``run_id`` (default: the run that held the lock).
    Returns the released lock, or None when nothing was locked."""
    lock = await get_lock(session, deployment_id)
    if lock is None:
        return None
    await session.execute(delete(StateLock).where(StateLock.deployment_id == deployment_id))
    session.expunge(lock)
    target = run_id if run_id is not None else lock.run_id
    if target is not None and await session.get(Run, target) is not None:
        holder = f"run {lock.run_id}" if lock.run_id is not None else "no run"
        await add_event(
            session,
            target,
            "state_lock_released",
            f"lock {lock.lock_id} held by {holder} force-released: {reason}",
            actor=actor,
            comment=comment,
        )
    return lock


async def list_state_versions(session: AsyncSession, deployment_id: int) -> Sequence[StateVersion]:
    """All versions, newest first, without their data."""
    rows = await session.scalars(
        select(StateVersion)
        .options(defer(StateVersion.data, raiseload=True))
        .where(StateVersion.deployment_id == deployment_id)
        .order_by(StateVersion.id.desc())
    )
    return rows.all()


async def get_state_version(
    session: AsyncSession, deployment: Deployment, version_id: int
) -> StateVersion:
    row = await session.scalar(
        select(StateVersion).where(
            StateVersion.deployment_id == deployment.id, StateVersion.id == version_id
        )
    )
    if row is None:
        raise NotFound(f"deployment {deployment.name!r} has no state version {version_id}")
    return row
