"""Variable endpoints of a deployment: set, list (sensitive values never shown), delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from backend.access import Role
from backend.api.deps import CipherDep, DeploymentDep, SessionDep, TokenDep, needs, role_of
from backend.api.routing import CheckedRoute
from backend.models import Variable
from backend.schemas.deployments import VariableOut, VariableSet
from backend.store import variables

router = APIRouter(
    prefix="/deployments/{name}/variables", tags=["variables"], route_class=CheckedRoute
)


def variable_out(row: Variable, *, with_value: bool = True) -> VariableOut:
    """A variable as the API shows it: a sensitive value never, a plain one only to those
    who may read values (admins)."""
    return VariableOut(
        key=row.key,
        category=row.category,
        sensitive=row.sensitive,
        value=None if row.sensitive or not with_value else row.value,
    )


@router.put("/{key}", **needs(Role.ADMIN))
async def set_variable(
    key: str,
    body: VariableSet,
    deployment: DeploymentDep,
    session: SessionDep,
    cipher: CipherDep,
    response: Response,
) -> VariableOut:
    row, created = await variables.set_variable(
        session,
        cipher,
        deployment,
        key,
        body.value,
        sensitive=body.sensitive,
        category=body.category,
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return variable_out(row)


@router.get("", **needs(Role.VIEWER))
async def list_variables(
    deployment: DeploymentDep, session: SessionDep, token: TokenDep
) -> list[VariableOut]:
    """The deployment's variables; their values only for an admin token."""
    values = role_of(token).includes(Role.ADMIN)
    rows = await variables.list_variables(session, deployment)
    return [variable_out(v, with_value=values) for v in rows]


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, **needs(Role.ADMIN))
async def delete_variable(
    key: str,
    deployment: DeploymentDep,
    session: SessionDep,
    category: Annotated[Literal["terraform", "env"], Query()] = "terraform",
) -> None:
    await variables.delete_variable(session, deployment, key, category)
