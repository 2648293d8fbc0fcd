"""Runner registry endpoints: register, list, show, remove."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, status

from backend.access import Role
from backend.api.deps import CipherDep, SessionDep, needs
from backend.api.routing import CheckedRoute
from backend.models import Runner
from backend.pool import view_of
from backend.schemas.runners import EffectiveLabel, RunnerCreate, RunnerOut
from backend.store import runners

router = APIRouter(prefix="/runners", tags=["runners"], route_class=CheckedRoute)


def effective_labels(row: Runner) -> list[EffectiveLabel]:
    """The labels the pool routes on (``view_of``: registered merged with reported), each
    with its source."""
    registered = row.labels or {}
    reported = (row.info or {}).get("labels") or {}
    out = []
    for key, value in sorted(view_of(row).labels.items()):
        if key in registered and key in reported:
            same = registered[key] == reported[key]
            out.append(
                EffectiveLabel(
                    key=key,
                    value=value,
                    source="both" if same else "reported",
                    registered_value=None if same else registered[key],
                )
            )
        else:
            origin: Literal["reported", "registered"] = (
                "reported" if key in reported else "registered"
            )
            out.append(EffectiveLabel(key=key, value=value, source=origin))
    return out


def runner_out(row: Runner) -> RunnerOut:
    return RunnerOut(
        name=row.id,
        address=row.address,
        labels=row.labels,
        effective_labels=effective_labels(row),
        status=row.status,
        info=row.info,
        has_token=row.token_encrypted is not None,
        tls=row.tls_ca_pem is not None or row.tls_cert_pem is not None,
        last_seen=row.last_seen,
        created_at=row.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, **needs(Role.ADMIN, unscoped=True))
async def register_runner(body: RunnerCreate, session: SessionDep, cipher: CipherDep) -> RunnerOut:
    spec = runners.RunnerSpec(**body.model_dump())
    return runner_out(await runners.register_runner(session, cipher, spec))


@router.get("", **needs(Role.VIEWER))
async def list_runners(session: SessionDep) -> list[RunnerOut]:
    return [runner_out(r) for r in await runners.list_runners(session)]


@router.get("/{name}", **needs(Role.VIEWER))
async def get_runner(name: str, session: SessionDep) -> RunnerOut:
    return runner_out(await runners.get_runner(session, name))


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, **needs(Role.ADMIN, unscoped=True)
)
async def delete_runner(name: str, session: SessionDep) -> None:
    await runners.delete_runner(session, name)
