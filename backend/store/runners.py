"""The runner registry: registration (by API or the runners file), lookup, removal, and the
record of each runner's last health / GetInfo answer.

Runner tokens and TLS client keys are secrets: encrypted at rest and only decrypted into a
``RunnerConnection`` for the gRPC client.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.crypto import Cipher
from backend.errors import Conflict, Invalid, NotFound
from backend.models import ACTIVE_STATUSES, Run, Runner, RunnerStatus, utcnow
from backend.store.validation import check_labels, check_name, parse_json

_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
MAX_PEM_CHARS = 64 * 1024
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class RunnerSpec:
    """What registering a runner takes; the runners file holds a list of these."""

    name: str
    address: str
    token: str | None = None
    tls_ca_pem: str | None = None
    tls_cert_pem: str | None = None
    tls_key_pem: str | None = None
    labels: dict[str, str] | None = None


@dataclass(frozen=True)
class RunnerConnection:
    """Everything the gRPC client needs to reach one runner, secrets decrypted."""

    name: str
    address: str
    token: str | None
    tls_ca_pem: str | None
    tls_cert_pem: str | None
    tls_key_pem: str | None


def check_address(address: str) -> str:
    """``host:port`` or ``[ipv6]:port`` (or a ``unix:`` socket path), or Invalid."""
    if isinstance(address, str) and address.startswith("unix:") and len(address) > 5:
        return address
    m = _HOST_PORT_RE.match(address) if isinstance(address, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise Invalid(f"runner address {address!r} is invalid: use host:port, e.g. 10.0.0.5:50051")
    return address


def _check_pem(pem: str | None, what: str) -> str | None:
    if pem is None or not pem.strip():
        return None
    if len(pem) > MAX_PEM_CHARS or "-----BEGIN " not in pem:
        raise Invalid(f"{what} must be a PEM text ('-----BEGIN ...') of at most 64 KiB")
    return pem


def _check_spec(spec: RunnerSpec) -> RunnerSpec:
    check_name(spec.name, "runner")
    check_address(spec.address)
    if spec.token is not None and (not spec.token or len(spec.token) > MAX_TOKEN_CHARS):
        raise Invalid(f"runner token must be 1 to {MAX_TOKEN_CHARS} characters")
    cert = _check_pem(spec.tls_cert_pem, "tls_cert_pem")
    key = _check_pem(spec.tls_key_pem, "tls_key_pem")
    if (cert is None) != (key is None):
        raise Invalid("tls_cert_pem and tls_key_pem (the client certificate) go together")
    _check_pem(spec.tls_ca_pem, "tls_ca_pem")
    return spec


def _apply(row: Runner, spec: RunnerSpec, cipher: Cipher) -> None:
    row.address = spec.address
    row.token_encrypted = (
        cipher.encrypt(spec.token, "a runner token") if spec.token is not None else None
    )
    row.tls_ca_pem = _check_pem(spec.tls_ca_pem, "tls_ca_pem")
    row.tls_cert_pem = _check_pem(spec.tls_cert_pem, "tls_cert_pem")
    key = _check_pem(spec.tls_key_pem, "tls_key_pem")
    row.tls_key_encrypted = cipher.encrypt(key, "a TLS client key") if key else None
    row.labels = check_labels(spec.labels)


async def register_runner(session: AsyncSession, cipher: Cipher, spec: RunnerSpec) -> Runner:
    """Add a new runner; Conflict if the name is taken."""
    _check_spec(spec)
    if await session.scalar(select(exists().where(Runner.id == spec.name))):
        raise Conflict(f"runner {spec.name!r} is already registered; delete it first")
    row = Runner(id=spec.name, status=RunnerStatus.UNKNOWN.value, info={})
    _apply(row, spec, cipher)
    try:
        # Added inside the savepoint: begin_nested() flushes pending objects first, and a
        # failed insert outside it would doom the whole transaction.
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise Conflict(f"runner {spec.name!r} is already registered; delete it first") from None
    return row


async def upsert_runner(session: AsyncSession, cipher: Cipher, spec: RunnerSpec) -> Runner:
    """Register or update a runner (the runners file is applied this way on every start)."""
    _check_spec(spec)
    row = await session.get(Runner, spec.name)
    if row is None:
        return await register_runner(session, cipher, spec)
    previous = (row.address, row.token_encrypted, row.tls_ca_pem, row.tls_cert_pem)
    _apply(row, spec, cipher)
    if previous[0] != row.address:
        # A new address is a different server until it has been polled.
        row.status = RunnerStatus.UNKNOWN.value
        row.info = {}
    return row


async def get_runner(session: AsyncSession, name: str) -> Runner:
    row = await session.get(Runner, name)
    if row is None:
        raise NotFound(f"runner {name!r} is not registered")
    return row


async def list_runners(session: AsyncSession) -> Sequence[Runner]:
    return (await session.scalars(select(Runner).order_by(Runner.id))).all()


async def delete_runner(session: AsyncSession, name: str) -> None:
    row = await get_runner(session, name)
    active = list(
        await session.scalars(
            select(Run.id).where(Run.runner_id == name, Run.status.in_(ACTIVE_STATUSES))
        )
    )
    if active:
        raise Conflict(
            f"runner {name!r} is executing runs ({', '.join(map(str, active[:10]))}); "
            "cancel them or wait until they end"
        )
    await session.delete(row)


async def find_runner(session: AsyncSession, name: str) -> Runner | None:
    return await session.get(Runner, name)


async def record_polls(
    session: AsyncSession,
    answers: Mapping[str, tuple[RunnerStatus | str, dict[str, Any] | None]],
    seen_at: datetime | None = None,
) -> list[Runner]:
    """Store the outcome of health / GetInfo polls, by runner name: its status and its info
    (None: keep the last answer); `last_seen` moves unless the runner was unreachable. The
    rows of runners still registered are returned (one read for them all)."""
    if not answers:
        return []
    rows = list(await session.scalars(select(Runner).where(Runner.id.in_(list(answers)))))
    for row in rows:
        status, info = answers[row.id]
        row.status = RunnerStatus(status).value
        if info is not None and info != row.info:
            row.info = info
        if row.status != RunnerStatus.UNHEALTHY.value:
            row.last_seen = seen_at or utcnow()
    return rows


def runner_connection(row: Runner, cipher: Cipher) -> RunnerConnection:
    """Decrypt what the gRPC client needs (DecryptionFailed when the key is wrong)."""
    return RunnerConnection(
        name=row.id,
        address=row.address,
        token=cipher.decrypt(row.token_encrypted) if row.token_encrypted else None,
        tls_ca_pem=row.tls_ca_pem,
        tls_cert_pem=row.tls_cert_pem,
        tls_key_pem=cipher.decrypt(row.tls_key_encrypted) if row.tls_key_encrypted else None,
    )


_SPEC_FIELDS = set(RunnerSpec.__dataclass_fields__)
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: str, environ: Mapping[str, str], where: str) -> str:
    """Replace each ``${NAME}`` in ``value`` by the environment variable NAME (set, non-empty)."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        found = environ.get(name)
        if not found:
            state = "is empty" if found == "" else "is not set"
            raise Invalid(f"{where} refers to ${{{name}}}, but environment variable {name} {state}")
        return found

    return _ENV_REF_RE.sub(lookup, value)


def read_runners_file(path: Path, environ: Mapping[str, str] | None = None) -> list[RunnerSpec]:
    """Parse a JSON runners file: a list of registrations, or {"runners": [...]}.

    String fields may hold ``${NAME}`` references, replaced by environment variables, so
    that the file can be committed while tokens and keys come from the environment.
    """
    environ = os.environ if environ is None else environ
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Invalid(f"runners file {path}: {exc.strerror or exc}") from None
    doc = parse_json(data, f"runners file {path}")
    if isinstance(doc, dict):
        doc = doc.get("runners")
    if not isinstance(doc, list):
        raise Invalid(f'runners file {path} must hold a list of runners or {{"runners": [...]}}')
    specs = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not {"name", "address"} <= item.keys():
            raise Invalid(f"runners file {path}: entry {i} needs at least 'name' and 'address'")
        unknown = set(item) - _SPEC_FIELDS
        if unknown:
            raise Invalid(f"runners file {path}: entry {i} has unknown keys {sorted(unknown)}")
        expanded = dict(item)
        for field in ("name", "address", "token", "tls_ca_pem", "tls_cert_pem", "tls_key_pem"):
            value = item.get(field)
            if value is not None and not isinstance(value, str):
                raise Invalid(f"runners file {path}: entry {i}: {field} must be a string")
            if value is not None:
                where = f"runners file {path}: entry {i} ({item['name']}): {field}"
                expanded[field] = _expand_env(value, environ, where)
        specs.append(RunnerSpec(**expanded))
    return specs


async def apply_runners_file(session: AsyncSession, cipher: Cipher, path: Path) -> list[Runner]:
    return [await upsert_runner(session, cipher, spec) for spec in read_runners_file(path)]
